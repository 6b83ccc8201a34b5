"""examples/torchrun_fsdp2.py under ``torchrun``: 2, then 4, then 1 rank on one directory.

Long mode only (``TRAINHOOKS_LONG=1``): each ``torchrun`` launch costs about 10 s on an idle
2-core machine (20-45 s under load), and the resharding it shows is already proven
bit-exact, in one shared launch, by ``test_storage.py``. This test keeps the example itself
running as its docstring says.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trainhooks
from _support.reliability import long_only

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "torchrun_fsdp2.py"


def launch(world: int, directory: Path) -> str:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={world}", str(EXAMPLE), str(directory)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@long_only
def test_fsdp2_example_resumes_across_world_sizes_and_verifies(tmp_path: Path) -> None:
    for world, step in [(2, 5), (4, 10), (1, 15)]:  # each launch resumes, trains 5, saves
        out = launch(world, tmp_path)
        assert f"world {world}: step {step}," in out
    infos = trainhooks.list_checkpoints(tmp_path)
    assert [info.step for info in infos] == [5, 10, 15]
    for info, world in zip(infos, [2, 4, 1], strict=True):
        assert trainhooks.verify_checkpoint(info.path).step == info.step
        assert len(list(info.path.glob(f"shard-*-of-{world:05d}.safetensors"))) == world
