"""Hooks' and listeners' own states, saved inside each checkpoint and restored with it.

Why: a hook with memory (an early-stopping count, an evaluation schedule) that forgets it
at every restart makes a preempted job behave differently from an uninterrupted one; a
job preempted more often than patience × save interval would never stop early. So every
hook or listener with ``state_dict()`` / ``load_state_dict()`` is saved with the state.

How: the session owns the hooks, so it composes the mapping a checkpoint holds
(``session.checkpoint_state``): the user's ``state`` plus one reserved entry,
``"__trainhooks__"``, holding ``{"hooks": {name: hook.state_dict()}}``. Checkpoint
listeners live inside their ``CheckpointSaverHook``, which composes theirs the same way
(``{"listeners": {name: ...}}``) as its own state. Each is keyed by a stable name: its
``name`` attribute when that is a non-empty string (every stateful built-in takes
``name=``), else its class name; a repeated name gets ``-2``, ``-3``, ... in list order.

When: states are taken as the checkpoint is written, so a checkpoint at step ``S`` holds
the listeners as they were *before* their ``after_save(S)``. At creation the session
restores them with the state (after every ``begin``); the saver hook then calls the
listeners' ``after_save(S)`` for the restored checkpoint again, which replays exactly what
the interrupted run did at ``S``. A checkpoint without the entry restores fine (nothing is
loaded into the hooks); a hook the checkpoint has no state for starts afresh, and saved
states no hook claims are ignored (another worker restores the chief's hooks' states);
both at once, which a renamed hook causes, is reported with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

from trainhooks._state._reserved import HOOK_STATE_KEY

__all__ = [
    "HOOK_STATE_KEY",
    "SessionHookStates",
    "StatefulParts",
    "has_state",
    "refuse_reserved_key",
    "stateful_by_name",
]

_LOG = logging.getLogger("trainhooks")


def has_state(obj: object) -> bool:
    """Whether ``obj`` saves and restores itself through ``state_dict`` / ``load_state_dict``."""
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


def stateful_by_name(objects: Iterable[object]) -> dict[str, Any]:
    """The objects with a state, by stable name (see the module docstring), in list order."""
    named: dict[str, Any] = {}
    for obj in objects:
        if not has_state(obj):
            continue
        base = getattr(obj, "name", None)
        if not isinstance(base, str) or not base:
            base = type(obj).__name__
        name, n = base, 1
        while name in named:
            n += 1
            name = f"{base}-{n}"
        named[name] = obj
    return named


def refuse_reserved_key(state: Mapping[str, Any]) -> None:
    """Refuse a user state that uses the name reserved for the hooks' states."""
    if HOOK_STATE_KEY in state:
        raise ValueError(
            f"state has an entry named {HOOK_STATE_KEY!r}, the name trainhooks reserves for "
            "the hooks' and listeners' own states inside each checkpoint; rename that entry"
        )


class StatefulParts:
    """Several named stateful objects saved and restored as one state (``{name: state}``).

    ``what`` names them in log lines ("hook", "listener").
    """

    def __init__(self, objects: Iterable[object], what: str) -> None:
        self.parts = stateful_by_name(objects)
        self.what = what

    def state_dict(self) -> dict[str, Any]:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        missing = []
        for name, part in self.parts.items():
            if name in saved:
                part.load_state_dict(saved[name])
            else:
                missing.append(name)
        unclaimed = sorted(set(saved) - set(self.parts))
        if missing and unclaimed:  # most likely a renamed (or reordered) one
            _LOG.warning(
                "the checkpoint holds no state for %ss %s, which start afresh, and states for "
                "%ss %s, which this session does not have and ignores. If a %s was renamed "
                "or reordered, give it a fixed name=... to keep its state across changes.",
                self.what,
                missing,
                self.what,
                unclaimed,
                self.what,
            )
        elif missing:
            _LOG.info(
                "the checkpoint holds no state for %ss %s; they start afresh", self.what, missing
            )
        elif unclaimed:  # e.g. the chief's hooks, restored on another worker
            _LOG.info(
                "ignoring the checkpoint's states of %ss %s, not in this session",
                self.what,
                unclaimed,
            )


class SessionHookStates:
    """The reserved entry of a session's checkpoints: ``{"hooks": {name: state}}``."""

    def __init__(self, hooks: Iterable[object]) -> None:
        self._hooks = StatefulParts(hooks, "hook")

    def __bool__(self) -> bool:
        return bool(self._hooks.parts)

    def state_dict(self) -> dict[str, Any]:
        return {"hooks": self._hooks.state_dict()}

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        self._hooks.load_state_dict(saved.get("hooks", {}))

    def around(self, state: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """What a checkpoint holds: ``state`` itself when no hook has a state, else
        ``state`` plus this entry under the reserved name."""
        return _CheckpointState(state, self) if self else state


class _CheckpointState(MutableMapping[str, Any]):
    """The user's state with the hooks' states as one more entry; writes go to the user's.

    Saving encodes it like any mapping; restoring fills it in place, which fills the
    user's mapping and loads the hooks (the reserved entry restores into itself).
    """

    def __init__(self, state: MutableMapping[str, Any], hooks: SessionHookStates) -> None:
        self._state = state
        self._hooks = hooks

    def __getitem__(self, key: str) -> Any:
        return self._hooks if key == HOOK_STATE_KEY else self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key != HOOK_STATE_KEY:  # the reserved entry was loaded in place
            self._state[key] = value

    def __delitem__(self, key: str) -> None:
        if key == HOOK_STATE_KEY:
            raise KeyError(f"{key!r} holds the hooks' states and cannot be deleted")
        del self._state[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._state
        yield HOOK_STATE_KEY

    def __len__(self) -> int:
        return len(self._state) + 1
