"""Two nodes on loopback: two ``torchrun --nnodes=2`` agents meeting through c10d rendezvous,
one process each, save one sharded checkpoint into a shared directory and load it back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

import trainhooks
from _support import dist_workers as w

SUPPORT = Path(__file__).resolve().parents[1] / "_support"



def test_two_nodes_commit_one_checkpoint_with_a_shard_each(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{w.free_port()}",
        "--rdzv-id=trainhooks-multinode",
        "--local-addr=127.0.0.1",
        "--max-restarts=0",
        str(SUPPORT / "multinode_job.py"),
        str(directory),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT.parent), *sys.path]),
        "GLOO_SOCKET_IFNAME": "lo",
    }
    env.pop("TRAINHOOKS_FAULTS", None)
    nodes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600)[0].decode(errors="replace") for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-4000:]
    listed = trainhooks.list_checkpoints(directory)
    assert [info.step for info in listed] == [2]
    path = listed[0].path
    assert sorted(p.name for p in path.iterdir()) == [
        "manifest.json",
        "shard-00000-of-00002.safetensors",
        "shard-00001-of-00002.safetensors",
    ]
    assert trainhooks.verify_checkpoint(path).metadata == {"nodes": 2}
    expected = dict(np.load(directory / "expected.npz"))
    w.assert_same(w.flat_arrays(trainhooks.load(path)), expected, "two nodes")
