"""Checkpoints on object storage (S3, GCS, any fsspec URL): ``docs/object-storage.md``."""
