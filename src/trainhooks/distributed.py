"""Multi-process training on ``torch.distributed``: importing this module imports torch.

``ShardedWriter`` / ``ShardedReader`` are a ``torch.distributed.checkpoint`` storage pair of
this project's format (one safetensors shard per rank, a JSON manifest with every chunk's
crc32c, one atomic commit, no pickle); ``save_sharded`` / ``load_sharded`` call DCP with them
and raise this project's typed errors, the same on every rank. See ``docs/distributed.md``.
"""

from trainhooks._dist._api import load_sharded, save_sharded
from trainhooks._dist._storage import ShardedReader, ShardedWriter

__all__ = ["ShardedReader", "ShardedWriter", "load_sharded", "save_sharded"]
