"""Multi-process training on ``torch.distributed``: importing this module imports torch.

``ShardedWriter`` / ``ShardedReader`` are a ``torch.distributed.checkpoint`` storage pair of
this project's format (one safetensors shard per rank, a JSON manifest with every chunk's
crc32c, one atomic commit, no pickle); ``save_sharded`` / ``load_sharded`` call DCP with them
and raise this project's typed errors, the same on every rank; ``save_sharded_async`` returns
once each rank's shards are copied and commits in the background. ``ModelOptimizerState`` makes
an FSDP2/DTensor model and its optimizer one reshardable entry of a session's ``state``
(``DistributedState`` is its base, for other DCP-native state). See ``docs/distributed.md``.
"""

from trainhooks._dist._api import load_sharded, save_sharded
from trainhooks._dist._async import save_sharded_async, wait_for_sharded_saves
from trainhooks._dist._state_dict import DistributedState, ModelOptimizerState
from trainhooks._dist._storage import ShardedReader, ShardedWriter

__all__ = [
    "DistributedState",
    "ModelOptimizerState",
    "ShardedReader",
    "ShardedWriter",
    "load_sharded",
    "save_sharded",
    "save_sharded_async",
    "wait_for_sharded_saves",
]
