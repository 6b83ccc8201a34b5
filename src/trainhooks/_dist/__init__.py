"""Multi-process training on ``torch.distributed``: a DCP storage pair of this project's format."""
