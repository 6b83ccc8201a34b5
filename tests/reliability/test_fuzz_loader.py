"""Fuzzing the loader: hostile headers and manifests give typed errors, bounded memory,
and a planted pickle is never executed.

Hypothesis builds checkpoints from a valid one by (a) flipping, cutting, inserting or
overwriting raw bytes of either file, (b) replacing any value of the manifest with any
JSON value and re-sealing its checksum (so the schema checks, not the checksum, are what
is tested), (c) writing a whole new safetensors header (names, dtypes, shapes, offsets,
length prefix) with a manifest sealed to match it. Every reader — ``verify_checkpoint``,
``load``, ``list_checkpoints``, ``Saver.restore`` into a template — must either succeed or
raise a ``TrainhooksError``; ``load`` must not allocate much beyond the input's size
(tracemalloc), and a child under ``RLIMIT_AS`` runs the nastiest inputs (huge lengths and
shapes) so that a runaway allocation would be a crash, not a slow test.

Default: 150 examples per strategy; ``TRAINHOOKS_LONG=1``: 3,000.
"""

from __future__ import annotations

import copy
import json
import re
import struct
import subprocess
import sys
import tempfile
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import crc32c
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import trainhooks
from _support.reliability import LONG, long_timeout, report_figure

DATA, MANIFEST, NAME = "tensors.safetensors", "manifest.json", "ckpt-000000000001"
EXAMPLES = 3000 if LONG else 150
# Default runs are deterministic and skip shrinking (a failure reports the raw example in a
# few seconds instead of minutes); long runs explore randomly and shrink to minimal examples.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG,
    database=None,
    phases=tuple(Phase) if LONG else (Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MEMORY_SLACK = 4 * 1024 * 1024  # interpreter noise allowed on top of the input-size bound
COUNTS: dict[str, int] = {}


def template_state() -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    return {
        "model": torch.nn.Linear(3, 2),
        "arr": np.arange(6, dtype=np.float32).reshape(2, 3),
        "half": torch.ones(4, dtype=torch.bfloat16),
        "rng": np.random.default_rng(1),
        "torch_rng": torch.Generator().manual_seed(2),
        "meta": {"lr": 0.5, "tags": ["a", "b"], 3: None},
    }


class Files(dict):  # type: ignore[type-arg]
    """File name -> bytes, with a short repr so failure reports stay readable."""

    def __repr__(self) -> str:
        return f"Files({', '.join(f'{k}: {len(v)} bytes' for k, v in self.items())})"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The two files of a valid checkpoint of ``template_state()``."""
    directory = tmp_path_factory.mktemp("template")
    with trainhooks.Saver() as saver:
        saver.save(template_state(), directory, 1)
    return Files({name: (directory / NAME / name).read_bytes() for name in (DATA, MANIFEST)})


RAW = "\x00raw:"  # a string starting so stands for raw JSON text no encoder writes


def raw(token: str) -> str:
    """A value written into the JSON as ``token`` itself (``1e400``, ``NaN``, ...)."""
    return RAW + token


def dump(value: Any, **kw: Any) -> str:
    """JSON text of ``value`` with every :func:`raw` marker replaced by its token."""
    text = json.dumps(value, **kw)
    return re.sub(r'"\\u0000raw:([^"]*)"', lambda m: m.group(1), text)


def seal(body: dict[str, Any]) -> bytes:
    """Manifest bytes with a correct checksum: the crc32c of the canonical JSON of every
    other key, i.e. of the bytes as written minus the checksum member (what readers check).
    Raw markers become their tokens first, so the seal covers them too."""
    body = {k: v for k, v in body.items() if k != "manifest_crc32c"}
    body["manifest_crc32c"] = raw("@CRC@")
    text = dump(body, sort_keys=True, separators=(",", ":"))
    unsealed = text.replace(',"manifest_crc32c":@CRC@', "")
    return text.replace("@CRC@", str(crc32c.crc32c(unsealed.encode()))).encode()


def exercise(files: dict[str, bytes]) -> list[str]:
    """Write ``files`` as a checkpoint and run every reader; untyped errors propagate."""
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        checkpoint = directory / NAME
        checkpoint.mkdir()
        for name, data in files.items():
            (checkpoint / name).write_bytes(data)
        size = sum(len(data) for data in files.values())
        readers: list[tuple[str, Callable[[], Any]]] = [
            ("verify", lambda: trainhooks.verify_checkpoint(checkpoint)),
            ("load", lambda: bounded_load(checkpoint, size)),
            ("list", lambda: trainhooks.list_checkpoints(directory)),
            ("restore", lambda: restore(directory)),
        ]
        outcomes = []
        for _, call in readers:
            try:
                call()
                outcomes.append("ok")
            except trainhooks.TrainhooksError as exc:
                outcomes.append(type(exc).__name__)
    COUNTS["inputs"] = COUNTS.get("inputs", 0) + 1
    return outcomes


def bounded_load(checkpoint: Path, input_size: int) -> Any:
    """``load`` while tracemalloc watches: peak allocation stays near the input's size."""
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        return trainhooks.load(checkpoint)
    finally:
        peak = tracemalloc.get_traced_memory()[1] - base
        assert peak <= 64 * input_size + MEMORY_SLACK, f"load allocated {peak} bytes"


def restore(directory: Path) -> Any:
    with warnings.catch_warnings(), trainhooks.Saver() as saver:
        warnings.simplefilter("ignore")
        return saver.restore(template_state(), directory)


@pytest.fixture(autouse=True, scope="module")
def _tracemalloc(template: dict[str, bytes]) -> Iterator[None]:
    """Trace allocations only once torch is imported and the template exists (speed)."""
    tracemalloc.start()
    yield
    tracemalloc.stop()
    report_figure("fuzz_loader", inputs=COUNTS.get("inputs", 0), readers_per_input=4, long=LONG)


# -- (a) raw byte damage -----------------------------------------------------------------

raw_edit = st.tuples(
    st.sampled_from([DATA, MANIFEST]),
    st.sampled_from(["flip", "cut", "insert", "overwrite"]),
    st.integers(min_value=0, max_value=10**6),
    st.binary(min_size=1, max_size=64),
)


@long_timeout
@FUZZ
@given(edits=st.lists(raw_edit, min_size=1, max_size=4))
def test_raw_byte_damage_gives_typed_errors(template: dict[str, bytes], edits: list[Any]) -> None:
    files = dict(template)
    for name, op, position, blob in edits:
        data = bytearray(files[name])
        at = position % (len(data) + 1)
        if op == "flip" and data:
            data[at % len(data)] ^= 1 << (blob[0] % 8)
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = blob
        else:
            data[at : at + len(blob)] = blob
        files[name] = bytes(data)
    exercise(files)


# -- (b) any manifest value replaced, checksum re-sealed ---------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([10**400, -(10**400), 2**64, -(2**63) - 1])  # huge ints
    | st.sampled_from([raw("1e400"), raw("-1e400"), raw("NaN"), raw("Infinity")])
    | st.text(max_size=12)
    | st.sampled_from(["../../etc/passwd", "/etc/passwd", DATA, "F32", "BF16", "tensor"])
    | st.sampled_from([[], {}]),
    lambda children: (
        st.lists(children, min_size=1, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, min_size=1, max_size=4)
    ),
    max_leaves=12,
)


def json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from json_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from json_paths(child, (*prefix, index))


def replace_at(body: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return body


@long_timeout
@FUZZ
@given(data=st.data())
def test_any_sealed_manifest_value_gives_typed_errors(
    template: dict[str, bytes], data: st.DataObject
) -> None:
    body = json.loads(template[MANIFEST])
    paths = list(json_paths(body))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        value = data.draw(json_values)
        body = replace_at(copy.deepcopy(body), path, value, data.draw(st.booleans()))
        paths = list(json_paths(body))
    manifest = seal(body) if isinstance(body, dict) else dump(body).encode()
    exercise({DATA: template[DATA], MANIFEST: manifest})


# -- (b') every position of the manifest and header, every hostile value class -----------

HOSTILE_CLASSES: dict[str, list[Any]] = {
    "huge_int": [10**400, -(10**400), 2**64, -(2**63) - 1],
    "non_finite": [raw("1e400"), raw("-1e400"), raw("NaN"), raw("Infinity"), raw("-Infinity")],
    "wrong_type": [None, True, "x", [], {}, 0.5, -1, [1]],
}


def hostile_values(index: int) -> Iterator[tuple[str, Any]]:
    """Every value of every class in long mode; by default one per class, rotating with
    the position so that each value is used at many positions."""
    for name, values in HOSTILE_CLASSES.items():
        chosen = values if LONG else [values[index % len(values)]]
        for value in chosen:
            yield name, value


@long_timeout
def test_every_manifest_position_with_each_hostile_class_gives_typed_errors(
    template: dict[str, bytes],
) -> None:
    body = json.loads(template[MANIFEST])
    tried: dict[str, int] = {}
    for index, path in enumerate(json_paths(body)):
        if not path:
            continue
        for name, value in hostile_values(index):
            forged = replace_at(copy.deepcopy(body), path, value, delete=False)
            try:
                exercise({DATA: template[DATA], MANIFEST: seal(forged)})
            except BaseException as exc:
                raise AssertionError(f"manifest{list(path)} = {value!r}: {exc!r}") from exc
            tried[name] = tried.get(name, 0) + 1
    report_figure("fuzz_manifest_positions", **tried)


@long_timeout
def test_every_header_position_with_each_hostile_class_gives_typed_errors(
    template: dict[str, bytes],
) -> None:
    (length,) = struct.unpack("<Q", template[DATA][:8])
    entries = json.loads(template[DATA][8 : 8 + length])
    payload = template[DATA][8 + length :]
    tried: dict[str, int] = {}
    for index, path in enumerate(json_paths(entries)):
        if not path:
            continue
        for name, value in hostile_values(index):
            forged = replace_at(copy.deepcopy(entries), path, value, delete=False)
            try:
                exercise(_forged_files(template, forged, payload, None))
            except BaseException as exc:
                raise AssertionError(f"header{list(path)} = {value!r}: {exc!r}") from exc
            tried[name] = tried.get(name, 0) + 1
    report_figure("fuzz_header_positions", **tried)


# -- (c) a whole new safetensors header with a manifest sealed to match it ----------------

DTYPES = ["F32", "F64", "BF16", "I64", "U8", "BOOL", "F128", "", "f32", "I4"]
header_entry = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(DTYPES) | json_values,
        "shape": st.lists(st.integers(-2, 2**40), max_size=4) | json_values,
        "data_offsets": st.lists(st.integers(-4, 2**62), min_size=2, max_size=2) | json_values,
    }
)
tensor_names = st.sampled_from(["model/weight", "model/bias", "arr", "half", "../x", "a/../../b"])


@long_timeout
@FUZZ
@given(
    entries=st.dictionaries(tensor_names | st.text(max_size=12), header_entry, max_size=5),
    payload=st.binary(max_size=256),
    prefix=st.none() | st.integers(min_value=0, max_value=2**64 - 1),
)
def test_any_sealed_safetensors_header_gives_typed_errors(
    template: dict[str, bytes], entries: dict[str, Any], payload: bytes, prefix: int | None
) -> None:
    exercise(_forged_files(template, entries, payload, prefix))


def _forged_files(
    template: dict[str, bytes], entries: dict[str, Any], payload: bytes, prefix: int | None
) -> dict[str, bytes]:
    """A data file with header ``entries`` (length prefix ``prefix``, default the true one)
    and a manifest re-sealed to match it, so only the header validators stand in the way."""
    header = dump(entries).encode()
    header += b" " * (-len(header) % 8)
    length = len(header) if prefix is None else prefix
    data = struct.pack("<Q", length) + header + payload
    body = json.loads(template[MANIFEST])
    body["files"] = {
        DATA: {
            "size": len(data),
            "header_size": 8 + len(header),
            "header_crc32c": crc32c.crc32c(data[: 8 + len(header)]),
        }
    }
    start = 8 + len(header)
    known = {record["name"]: record["crc32c"] for record in body["tensors"]}
    body["tensors"] = [
        _record(name, entry, start, known.get(name, crc32c.crc32c(payload)))
        for name, entry in entries.items()
        if name != "__metadata__" and isinstance(entry, dict)
    ]
    return {DATA: data, MANIFEST: seal(body)}


def _record(name: str, entry: dict[str, Any], start: int, crc: int) -> dict[str, Any]:
    offsets = entry.get("data_offsets")
    if isinstance(offsets, list) and all(type(o) is int for o in offsets):
        offsets = [start + o for o in offsets]
    return {
        "name": name,
        "file": DATA,
        "dtype": entry.get("dtype"),
        "shape": entry.get("shape"),
        "offsets": offsets,
        "crc32c": crc,
    }


# -- nastiest inputs under an address-space cap ------------------------------------------

CAPPED_SCRIPT = """
import json, resource, sys
import trainhooks

def vm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")

cap = vm_bytes() + 256 * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
results = {}
for case in sys.argv[1:]:
    outcome = []
    for reader in (trainhooks.verify_checkpoint, trainhooks.load):
        try:
            reader(case)
            outcome.append("ok")
        except trainhooks.TrainhooksError as exc:
            outcome.append(type(exc).__name__)
        except BaseException as exc:
            outcome.append("UNTYPED " + type(exc).__name__ + ": " + str(exc)[:200])
    results[case] = outcome
print(json.dumps(results))
"""


def nasty_cases(template: dict[str, bytes]) -> dict[str, dict[str, bytes]]:
    """Header lengths, shapes and tensor counts that ask for terabytes from a tiny file."""
    cases = {}
    terabyte = {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 4 * 2**40]}
    overflow = {"dtype": "F64", "shape": [2**62, 2**62], "data_offsets": [0, 16]}
    empty = {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
    for name, entries, length in (
        ("huge_prefix", {}, 2**63),
        ("prefix_past_end", {}, 10**6),
        ("terabyte_shape", {"x": terabyte}, None),
        ("overflow_shape", {"x": overflow}, None),
        ("many_tensors", {f"t{i}": empty for i in range(20000)}, None),
    ):
        cases[name] = _forged_files(template, entries, b"", length)
    depth = 100_000
    tree = '{"items":[' * depth + '{"type":"value","value":1}' + "]" + ',"type":"list"}' * depth
    manifest = template[MANIFEST].decode()
    at = manifest.index('"tree":') + len('"tree":')  # "tree" is the last key (sorted)
    cases["deep_tree"] = {DATA: template[DATA], MANIFEST: (manifest[:at] + tree + "}").encode()}
    return cases


def test_nasty_inputs_under_an_address_space_cap(
    template: dict[str, bytes], tmp_path: Path
) -> None:
    paths = []
    for name, files in nasty_cases(template).items():
        checkpoint = tmp_path / name / NAME
        checkpoint.mkdir(parents=True)
        for file_name, data in files.items():
            (checkpoint / file_name).write_bytes(data)
        paths.append(str(checkpoint))
    done = subprocess.run(
        [sys.executable, "-c", CAPPED_SCRIPT, *paths], capture_output=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    results = json.loads(done.stdout)
    untyped = {case: r for case, r in results.items() if any(x.startswith("UNTYPED") for x in r)}
    assert not untyped, untyped
    assert all(outcome[1] == "CheckpointCorruptError" for outcome in results.values()), results
