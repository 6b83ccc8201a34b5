"""The torch adapter: tensors, generators, dtypes and devices, and what torch's own
``load_state_dict`` methods refuse. The one module of trainhooks that imports torch; it is
loaded only once the process has imported torch (or asked for the torch profiler).

Its process-wide random state is the CPU generator's, every CUDA device's (once CUDA is
initialised: capturing it must not initialise CUDA in a process that never used it) and
MPS's when present. A checkpoint restored where a saved device generator has no device
warns and skips that part. The CUDA and MPS calls are one line each around
``device_rng_states``, which plans what to set and is tested with real CPU tensors; they
have not run on a GPU in this project's tests (its machines have none).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from trainhooks._exceptions import CheckpointFormatError
from trainhooks._state._adapters._base import ArrayAdapter, ArrayBytes, Fill, Staged

if TYPE_CHECKING:
    from trainhooks._state._mapped import MappedTensor

__all__ = ["ADAPTER", "TorchAdapter", "device_rng_states", "start_profiler"]

CODE_BY_TORCH: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.uint16: "U16",
    torch.int16: "I16",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.uint32: "U32",
    torch.int32: "I32",
    torch.float32: "F32",
    torch.uint64: "U64",
    torch.int64: "I64",
    torch.float64: "F64",
    torch.complex64: "C64",
}
TORCH_BY_CODE: dict[str, torch.dtype] = {code: dtype for dtype, code in CODE_BY_TORCH.items()}


def _byte_view(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, shared with it."""
    return tensor.reshape(-1).view(torch.uint8).numpy().data


class TorchAdapter:
    """torch tensors (kind ``torch``), ``torch.Generator``, ``torch.dtype``, ``torch.device``."""

    name = "torch"

    def kind_of(self, value: object) -> str | None:
        if isinstance(value, torch.nn.Parameter):
            return "torch_parameter"  # restored without a target as a Parameter again
        return "torch" if isinstance(value, torch.Tensor) else None

    def array_bytes(self, value: Any, where: str) -> ArrayBytes:
        code = _code_of(value, where)
        flat = value.detach().resolve_conj().resolve_neg().cpu().contiguous()
        return code, tuple(value.shape), _byte_view(flat)

    def stage(self, value: Any, where: str, reuse: Any) -> Staged:
        """One ``copy_`` into a reused buffer (any strides, conjugate or negative bits
        resolved by the copy). A tensor on a CUDA device is copied without blocking into
        pinned memory; ``ready`` then waits for that copy, on the writer's thread."""
        code = _code_of(value, where)
        on_cuda = value.device.type == "cuda"
        staging = _Staging.refill(reuse, value, on_cuda)
        staging.target.copy_(value.detach(), non_blocking=on_cuda)
        ready = None
        if on_cuda:
            copied = torch.cuda.Event()  # type: ignore[no-untyped-call]
            copied.record(torch.cuda.current_stream(value.device))
            ready = copied.synchronize
        return Staged((code, staging.shape, staging.data), staging, ready)

    def new_array(self, code: str, shape: tuple[int, ...], kind: str, fill: Fill) -> Any:
        tensor = torch.empty(shape, dtype=TORCH_BY_CODE[code])
        fill(_byte_view(tensor))
        if kind == "torch_parameter":  # requires_grad as a new Parameter has it
            grad = tensor.is_floating_point() or tensor.is_complex()  # (True unless integer)
            return torch.nn.Parameter(tensor, requires_grad=grad)
        return tensor

    def view(self, tensor: MappedTensor) -> torch.Tensor:
        dtype = TORCH_BY_CODE[tensor.code]
        if not tensor.data.nbytes:  # torch.frombuffer refuses an empty buffer
            return torch.empty(tensor.shape, dtype=dtype)
        flat = torch.frombuffer(tensor.data, dtype=torch.uint8)
        return flat.view(dtype).reshape(tensor.shape)

    def can_fill(self, target: Any) -> bool:
        return isinstance(target, torch.Tensor)

    def copy_into(self, target: Any, tensor: MappedTensor) -> None:
        with torch.no_grad():
            target.copy_(self.view(tensor))  # one copy, mapping -> target; casts if needed

    def cast_copy(self, tensor: MappedTensor, like: Any) -> Any:
        return self.view(tensor).to(dtype=like.dtype, copy=True)

    def loads_by_copy(self, target: object) -> bool:
        return isinstance(target, torch.nn.Module)  # load_state_dict copy_()s every tensor

    def refusal(self, node_type: str, target: object, state: Any) -> str | None:
        if node_type == "torch_generator":
            return _generator_refusal(target, state)
        if node_type != "stateful" or not isinstance(state, dict):
            return None
        if isinstance(target, torch.nn.Module):
            return _module_refusal(target, state)
        if isinstance(target, torch.optim.Optimizer):
            return _optimizer_refusal(target, state)
        if isinstance(target, torch.amp.GradScaler) and not state:
            return "the checkpoint holds the empty state of a disabled GradScaler"
        return None

    def generator_state(self, value: object) -> tuple[str, Any] | None:
        if isinstance(value, torch.Generator):
            return "torch_generator", value.get_state()
        return None

    def restore_generator(self, node_type: str, target: object, state: Any) -> Any:
        if node_type != "torch_generator":
            raise CheckpointFormatError(f"unknown tree node type {node_type!r}")
        generator = target if isinstance(target, torch.Generator) else torch.Generator()
        generator.set_state(_as_tensor(state))
        return generator

    def global_rng_state(self) -> Any | None:
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            state["cuda"] = torch.cuda.get_rng_state_all()
        if torch.backends.mps.is_available():
            state["mps"] = torch.mps.get_rng_state()
        return state

    def set_global_rng_state(self, state: Any) -> None:
        if not isinstance(state, dict):  # a checkpoint from before device generators
            state = {"cpu": state}
        torch.set_rng_state(_as_tensor(state["cpu"]))
        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        cuda, problem = device_rng_states(state.get("cuda", ()), cuda_count, "CUDA")
        for index, device_state in enumerate(cuda):
            torch.cuda.set_rng_state(device_state, index)  # queued until CUDA initialises
        mps_count = 1 if torch.backends.mps.is_available() else 0
        saved_mps = [state["mps"]] if state.get("mps") is not None else []
        mps, mps_problem = device_rng_states(saved_mps, mps_count, "MPS")
        for device_state in mps:
            torch.mps.set_rng_state(device_state)
        for message in (problem, mps_problem):
            if message is not None:
                warnings.warn(message, stacklevel=3)

    def node_children(self, value: object) -> list[tuple[str | int, Any]] | None:
        return None

    def rebuild_node(self, target: Any, children: list[Any]) -> Any:
        raise TypeError(f"{type(target).__name__} is not a container node of {self.name}")

    def value_name(self, value: object) -> tuple[str, str] | None:
        if isinstance(value, torch.dtype):
            return "torch_dtype", str(value).removeprefix("torch.")
        if isinstance(value, torch.device):
            return "torch_device", str(value)
        return None

    def decode_value(self, node_type: str, text: str) -> Any:
        if node_type == "torch_device":
            try:
                return torch.device(text)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise CheckpointFormatError(f"invalid torch device {text[:80]!r} ({exc})") from None
        dtype = getattr(torch, text, None)
        if node_type != "torch_dtype" or not isinstance(dtype, torch.dtype):
            raise CheckpointFormatError(f"unknown {node_type} {text!r} in the checkpoint tree")
        return dtype


class _Staging:
    """A staging buffer of one tensor: flat bytes, a view of them shaped like the tensor
    (the ``copy_`` target) and their memoryview, all kept so a refill makes no new views."""

    def __init__(self, flat: torch.Tensor, value: torch.Tensor) -> None:
        self.flat = flat
        self.target = flat.view(value.dtype).view(value.shape)
        self.shape = tuple(value.shape)
        self.data = _byte_view(flat)
        self.nbytes = flat.numel()

    @classmethod
    def refill(cls, reuse: Any, value: torch.Tensor, pinned: bool) -> _Staging:
        """``reuse`` when it fits ``value`` (same shape and dtype: nothing to redo; same
        size: re-viewed), else a new buffer."""
        if isinstance(reuse, _Staging) and (not pinned or reuse.flat.is_pinned()):
            if reuse.shape == value.shape and reuse.target.dtype == value.dtype:
                return reuse
            if reuse.nbytes == value.numel() * value.element_size():
                return cls(reuse.flat, value)
        nbytes = value.numel() * value.element_size()
        return cls(torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned), value)


def _code_of(value: torch.Tensor, where: str) -> str:
    """The safetensors code of a tensor we can store; refuses the others."""
    code = CODE_BY_TORCH.get(value.dtype)
    if code is None:
        raise CheckpointFormatError(
            f"cannot checkpoint {where}: torch dtype {value.dtype} has no safetensors "
            "equivalent; convert it first"
        )
    if value.layout != torch.strided or value.is_quantized:
        raise CheckpointFormatError(
            f"cannot checkpoint {where}: {value.layout} / quantized tensors are not "
            "supported; convert with .to_dense() or .dequantize() first"
        )
    return code


def _as_tensor(state: Any) -> torch.Tensor:
    return state if isinstance(state, torch.Tensor) else torch.as_tensor(np.asarray(state))


def device_rng_states(
    saved: Sequence[Any], device_count: int, backend: str
) -> tuple[list[torch.Tensor], str | None]:
    """The generator states to set on devices ``0..`` of a backend, from the per-device
    states a checkpoint holds, and a warning when they do not fit: saved on more devices
    than this process has (the extra ones are skipped; none are set on a machine without
    the backend) or on fewer (the other devices keep their state). Pure: no device is
    touched, so the plan is tested with CPU tensors where no GPU exists."""
    states = [_as_tensor(state).cpu() for state in saved]
    if any(state.dtype != torch.uint8 or state.dim() != 1 for state in states):
        raise ValueError(f"a saved {backend} generator state is not a flat uint8 tensor")
    usable = states[:device_count]
    if not states or len(states) == device_count:
        return usable, None
    held = f"the checkpoint holds the {backend} random state of {len(states)} device(s)"
    if not device_count:
        return [], (
            f"{held} but this process has no {backend} device: it was not restored, so "
            f"{backend} random draws will differ from the saved run"
        )
    if len(states) > device_count:
        return usable, (
            f"{held}, this process has {device_count}: devices 0-{device_count - 1} were "
            f"restored, the states of the other {len(states) - device_count} skipped"
        )
    return usable, (
        f"{held}, this process has {device_count}: devices 0-{len(states) - 1} were "
        "restored, the others keep their current state"
    )


def _generator_refusal(target: object, state: Any) -> str | None:
    if not isinstance(target, torch.Generator):
        return None
    mine, saved = tuple(target.get_state().shape), tuple(getattr(state, "shape", ()))
    if mine != saved:
        return (
            f"the checkpoint holds a generator state of {list(saved)} bytes, the target "
            f"generator (on {target.device}) has {list(mine)}"
        )
    return None


def _module_refusal(module: torch.nn.Module, state: dict[Any, Any]) -> str | None:
    """What ``load_state_dict(strict=True)`` refuses: missing or unexpected keys."""
    expected = module.state_dict().keys()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if not (missing or unexpected):
        return None
    return (
        f"the saved {type(module).__name__} does not have the target's parameters and buffers: "
        f"missing from the checkpoint {missing}, not in the model {unexpected}; the model's "
        "architecture differs from the saved one"
    )


def _optimizer_refusal(optimizer: torch.optim.Optimizer, state: dict[Any, Any]) -> str | None:
    """What ``Optimizer.load_state_dict`` refuses: other param group counts or sizes."""
    saved = state.get("param_groups")
    if not isinstance(saved, list):
        return "the checkpoint's optimizer state has no param_groups list"
    mine = [len(group["params"]) for group in optimizer.param_groups]
    theirs = [len(g.get("params", ())) if isinstance(g, dict) else None for g in saved]
    if mine != theirs:
        return (
            f"the saved optimizer has param groups of sizes {theirs}, the target {mine}; "
            "build the optimizer over the same parameter groups as the saved run"
        )
    return None


def start_profiler(show_memory: bool) -> Any:
    """A started ``torch.profiler.profile`` over the CPU (and CUDA when available); for
    ``ProfilerHook``, which must not import torch itself."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    profiler = profile(activities=activities, profile_memory=show_memory)
    profiler.start()
    return profiler


ADAPTER: ArrayAdapter = TorchAdapter()
