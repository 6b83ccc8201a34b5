"""Save and restore through ``s3://`` against raw s3fs on the same bytes, same server.

Starts moto's S3 server on loopback (or uses ``--endpoint``), then per repetition, order
rotating: raw ``S3FileSystem.pipe_file`` / ``cat_file`` of the state's bytes, and
trainhooks ``Saver.save`` (upload, verify size, exclusive manifest) / ``Saver.restore``
(range reads, crc32c of every tensor). Best repetition compared (noise only adds time);
goal: trainhooks >= 0.9x raw. Moto, not the network, bounds both here.

Then background saving to the same server, one saver kept (its staging buffers reused,
after one warm-up save): the *stall* of ``Saver.save_async`` (until the call returns and
training may go on) and its total (until the future resolves, i.e. the manifest is
created), against the blocking ``Saver.save``.

Usage: ``python benchmarks/object_storage.py [--size-mib 256] [--repeats 3] [--tensors 4]``
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
import uuid

import numpy as np


def _server() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tensors", type=int, default=4)
    parser.add_argument("--endpoint", default=None)
    args = parser.parse_args()
    server, endpoint = (None, args.endpoint) if args.endpoint else _server()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["AWS_ENDPOINT_URL"] = endpoint

    import s3fs

    import trainhooks

    fs = s3fs.S3FileSystem(skip_instance_cache=True, client_kwargs={"endpoint_url": endpoint})
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    n = args.size_mib * 1024 * 1024 // 4 // args.tensors
    rng = np.random.default_rng(0)
    state = {f"t{i}": rng.standard_normal(n, dtype=np.float32) for i in range(args.tensors)}
    raw = b"".join(a.tobytes() for a in state.values())
    times: dict[str, list[float]] = {k: [] for k in ("raw_put", "save", "raw_get", "restore")}
    for rep in range(args.repeats):
        url = f"s3://{bucket}/run{rep}"

        def raw_put(url: str = url) -> None:
            fs.pipe_file(f"{url}/raw.bin", raw)

        def save(url: str = url) -> None:
            with trainhooks.Saver(max_to_keep=None) as saver:
                saver.save(state, url, 1)

        def raw_get(url: str = url) -> None:
            assert len(fs.cat_file(f"{url}/raw.bin")) == len(raw)

        def restore(url: str = url) -> None:
            target = {k: np.empty_like(v) for k, v in state.items()}
            trainhooks.Saver().restore(target, url)

        pairs = [("raw_put", raw_put, "raw_get", raw_get), ("save", save, "restore", restore)]
        for put_name, put, get_name, get in pairs[rep % 2 :] + pairs[: rep % 2]:
            for name, fn in ((put_name, put), (get_name, get)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        fs.rm(url, recursive=True)
    mib = len(raw) / 2**20
    print(f"{mib:.0f} MiB in {args.tensors} tensors, {args.repeats} repetitions, {endpoint}")
    for name, values in times.items():
        print(
            f"  {name:8} best {mib / min(values):7.1f} MiB/s",
            ", ".join(f"{v:.2f}" for v in values),
        )
    save_ratio = min(times["raw_put"]) / min(times["save"])
    restore_ratio = min(times["raw_get"]) / min(times["restore"])
    print(
        f"save    {save_ratio:.2f}x raw pipe_file  ({'ok' if save_ratio >= 0.9 else 'below'} 0.9)"
    )
    print(
        f"restore {restore_ratio:.2f}x raw cat_file",
        "ok" if restore_ratio >= 0.9 else "below 0.9",
    )
    _async_stall(trainhooks, state, f"s3://{bucket}/async", args.repeats, mib)
    if server is not None:
        server.stop()  # type: ignore[attr-defined]


def _async_stall(
    trainhooks: object, state: dict[str, np.ndarray], url: str, repeats: int, mib: float
) -> None:
    """The training thread's stall of a background save against a blocking one."""
    th: object = trainhooks
    stall, total, blocking = [], [], []
    with th.Saver(max_to_keep=2) as saver:  # type: ignore[attr-defined]
        saver.save_async(state, url, 0).result()  # warm-up: allocates the staging buffers
        for rep in range(repeats):
            start = time.perf_counter()
            future = saver.save_async(state, url, 2 * rep + 1)
            stall.append(time.perf_counter() - start)
            future.result()
            total.append(time.perf_counter() - start)
            start = time.perf_counter()
            saver.save(state, url, 2 * rep + 2)
            blocking.append(time.perf_counter() - start)
    print(f"background save of {mib:.0f} MiB to {url.rpartition('/')[0]}:")
    for name, values in (("stall", stall), ("total", total), ("blocking", blocking)):
        print(f"  {name:8} best {min(values):6.3f} s", ", ".join(f"{v:.3f}" for v in values))
    print(
        f"stall   {min(stall) / min(blocking):.3f}x the blocking save "
        f"({min(blocking) / min(stall):.0f}x shorter)"
    )


if __name__ == "__main__":
    main()
