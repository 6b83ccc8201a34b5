"""``ResumeCheckHook``: notice when a resumed run trains differently from the run it resumes.

Most resume bugs are silent: a learning-rate scheduler left out of ``state`` restarts its
schedule, a data iterator that is not saved starts its epoch again, and the resumed run
simply trains something else. This hook makes that visible. After every save it records
what the next ``steps`` steps return (a digest: the loss as is, arrays reduced to two
sums) in a small journal beside the checkpoints. After a restore, the re-run steps are
compared with what the crashed run recorded, and the first difference is reported once,
with the step, both values and the usual suspects.

Decisions (the reasons are in docs/hooks-and-listeners.md):

* Saves are followed through ``CheckpointSaverHook.last_saved_step`` (one attribute read
  per step); restores through ``MonitoredSession.restored_checkpoint``. Between windows
  ``after_run`` does nothing else, so the per-step cost is a few attribute reads.
* The journal is rewritten whole (atomically, with an fsync) when a window holds 1, 2,
  4, 8, ... entries and when it is full: a handful of tiny writes per checkpoint, not one
  per step. A crash loses the entries recorded since the last write; the check then
  compares fewer steps, never wrong ones.
* The journal keeps the windows of the newest ``KEEP_WINDOWS`` checkpoints only; a save
  or restore at step ``s`` drops every window at or after ``s`` (another history).
* A divergence is a warning by default: the resumed run may be right and the crashed one
  wrong (a fixed bug), or kernels may be nondeterministic. ``on_divergence="raise"``
  raises ``ResumeDivergenceError`` instead. The journal is a diagnostic: if it cannot be
  read or written, the hook says so once and training goes on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from trainhooks._exceptions import ResumeDivergenceError
from trainhooks._hooks._checkpoint_saver import CheckpointSaverHook
from trainhooks._hooks._step_digest import Difference, Digest, digest, first_difference
from trainhooks._session._hook import (
    HookSession,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from trainhooks._store._journal import read_journal, remove_journal_temps, write_journal

__all__ = ["KEEP_WINDOWS", "ResumeCheckHook"]

_LOG = logging.getLogger("trainhooks")
KEEP_WINDOWS = 3  # the newest checkpoints whose following steps the journal keeps
_MAX_STEPS = 1024

_SUSPECTS = (
    "a learning-rate scheduler (or anything else that counts steps) missing from state",
    "the data position: a sampler, iterator or epoch counter that is not saved, or data "
    "order drawn from an unsaved generator",
    "random generators: put trainhooks.RNGState() and any torch.Generator you draw from into state",
    "a hook or listener that changes the model or state when a session is created",
    "nondeterministic kernels (GPU): loosen rtol or turn the check off",
)


class ResumeCheckHook(SessionRunHook):
    """Records what the steps after each save return; checks re-run steps after a restore.

    ``saver_hook`` is the ``CheckpointSaverHook`` whose saves are followed; the journal
    lives in its ``checkpoint_dir``. ``MonitoredTrainingSession`` installs one on the chief
    when it saves checkpoints (``resume_check=False`` turns it off; pass
    ``resume_check=ResumeCheckHook(rtol=...)`` to tune it, the session fills in the saver).

    ``steps`` (1 to 1024) steps after each save are recorded. Two values agree when
    ``|a - b| <= atol + rtol * max(|a|, |b|)``; the default ``rtol=1e-6`` suits a CPU
    resume, which is bit-exact here. ``on_divergence`` is ``"warn"`` (log one warning per
    restore) or ``"raise"`` (``ResumeDivergenceError``). ``enabled=False`` makes the hook
    inert.
    """

    def __init__(
        self,
        saver_hook: CheckpointSaverHook | None = None,
        *,
        steps: int = 32,
        rtol: float = 1e-6,
        atol: float = 0.0,
        on_divergence: Literal["warn", "raise"] = "warn",
        enabled: bool = True,
    ) -> None:
        if not isinstance(steps, int) or not 1 <= steps <= _MAX_STEPS:
            raise ValueError(
                f"steps must be an int from 1 to {_MAX_STEPS} (the journal stays small), "
                f"got {steps!r}"
            )
        if not (rtol >= 0 and atol >= 0):
            raise ValueError(f"rtol and atol must be >= 0, got rtol={rtol!r}, atol={atol!r}")
        if on_divergence not in ("warn", "raise"):
            raise ValueError(f'on_divergence must be "warn" or "raise", got {on_divergence!r}')
        self._saver_hook = saver_hook
        self._steps, self._rtol, self._atol = steps, float(rtol), float(atol)
        self._raise = on_divergence == "raise"
        self._enabled = bool(enabled)
        self._directory: Path | None = None
        self._loaded = False
        self._writable = True
        self._unwritten = False  # entries recorded since the journal was last written
        self._windows: dict[int, dict[int, Digest]] = {}  # save step -> step -> digest
        self._open: dict[int, Digest] | None = None  # the window being filled
        self._open_after: int | None = None  # the save step that window follows
        self._count = 0  # steps this run recorded in the open window
        self._expected: dict[int, Digest] | None = None  # recorded before the crash
        self._restored_step = 0
        self._expected_steps = (0, 0)  # first and last step recorded before the crash
        self._matched = 0

    @property
    def saver_hook(self) -> CheckpointSaverHook | None:
        """The ``CheckpointSaverHook`` whose saves this hook follows."""
        return self._saver_hook

    def _follow(self, saver_hook: CheckpointSaverHook) -> None:
        """Set the saver hook (``MonitoredTrainingSession`` does, for a hook given unset)."""
        self._saver_hook = saver_hook

    # -- the hook protocol --------------------------------------------------------------

    def begin(self) -> None:
        if self._enabled and self._saver_hook is None:
            raise ValueError(
                "ResumeCheckHook needs the CheckpointSaverHook whose saves it follows: "
                "ResumeCheckHook(saver_hook), or give it to MonitoredTrainingSession as "
                "resume_check=ResumeCheckHook(...)"
            )

    def after_create_session(self, session: HookSession, coord: Any) -> None:
        if not self._enabled or self._saver_hook is None:
            return
        directory = self._saver_hook.checkpoint_dir
        if not isinstance(directory, Path):  # object storage: the journal is a local file
            if self._enabled:
                _LOG.info(
                    "resume check: off for %s (its journal needs a local directory)", directory
                )
            self._enabled = False
            return
        self._directory = directory
        self._expected = None
        first, self._loaded = not self._loaded, True
        if first:
            self._remove_temps()
        step: int = session.global_step
        restored = session.restored_checkpoint
        if (
            restored is not None
            and restored.step == step
            and _same_directory(Path(restored.path).parent, self._directory)
        ):
            if first:  # later re-creations in this process keep what memory holds (newer)
                self._windows = self._read()
            self._expected = self._recorded_after(step)
            self._restored_step, self._matched = step, 0
            if self._expected:
                self._expected_steps = (min(self._expected), max(self._expected))
        # The saver hook saves at creation (TF's contract): the state at this step is in
        # a checkpoint, so the steps after it form a window. After a restore the window
        # starts with what the crashed run recorded, so that a write keeps those entries.
        self._open_window(step, start=self._expected)

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        if self._saver_hook is None or not self._enabled:
            return
        saved = self._saver_hook.last_saved_step
        step: int = run_context.session.global_step
        # The step's value belongs to the newest save before it; a save at this very step
        # (the saver ran first) opens its window only after the value is recorded.
        if saved is not None and saved != self._open_after and saved < step:
            self._open_window(saved)
        if self._open is not None or self._expected is not None:
            self._observe(step, run_values.step_result)
        if saved == step and saved != self._open_after:
            self._open_window(saved)

    def end(self, session: HookSession) -> None:
        if self._unwritten:
            self._write()  # a normal end keeps every entry, for a later resume

    # -- recording and comparing --------------------------------------------------------

    def _recorded_after(self, step: int) -> dict[int, Digest] | None:
        """What the crashed run recorded for the steps after ``step``: every window at or
        after it (each later save opened one) belongs to the history that went on from it."""
        merged = {
            s: values
            for after in sorted(self._windows)
            if after >= step
            for s, values in self._windows[after].items()
            if s > step
        }
        return merged or None

    def _open_window(self, after: int, start: dict[int, Digest] | None = None) -> None:
        """Start recording the steps after a save at ``after``.

        Whatever the journal holds for steps after ``after`` belongs to a history that
        this run replaces from here on: windows at or after it go, and so do entries
        past it in older windows (copied there from the crashed run after a restore).
        """
        for stale in [s for s in self._windows if s >= after]:
            del self._windows[stale]
        for window in self._windows.values():
            for later in [s for s in window if s > after]:
                del window[later]
        self._open, self._open_after, self._count = dict(start or {}), after, 0
        self._windows[after] = self._open
        while len(self._windows) > KEEP_WINDOWS:
            del self._windows[min(self._windows)]

    def _observe(self, step: int, result: Any) -> None:
        try:
            values = digest(result)
        except Exception as exc:  # a diagnostic must never end training
            _LOG.warning(
                "resume check: cannot read the value step %d returned (%r); the check is "
                "off for the rest of this run",
                step,
                exc,
            )
            self._enabled = False
            return
        if self._expected is not None:
            self._compare(step, values)  # may raise: then nothing of this run is recorded
        if self._open is not None:
            self._record(self._open, step, values)

    def _record(self, window: dict[int, Digest], step: int, values: Digest) -> None:
        window[step] = values
        self._unwritten = True
        self._count += 1
        count = self._count
        if count >= self._steps:
            self._open = None
        if count >= self._steps or count & (count - 1) == 0:  # full, or a power of two
            self._write()

    def _compare(self, step: int, values: Digest) -> None:
        expected = self._expected
        assert expected is not None
        recorded = expected.get(step)
        if recorded is not None:
            difference = first_difference(recorded, values, self._rtol, self._atol)
            if difference is not None:
                self._expected = None  # once per restore
                self._report(step, difference)
                return
            self._matched += 1
        if step >= self._expected_steps[1]:
            self._expected = None
            _LOG.info(
                "resume check: %d re-run step(s) after checkpoint %d match the run that wrote it",
                self._matched,
                self._restored_step,
            )

    def _report(self, step: int, difference: Difference) -> None:
        name, recorded, observed = difference
        message = divergence_message(
            step=step,
            checkpoint_step=self._restored_step,
            directory=self._directory,
            difference=difference,
            first_step_differs=self._matched == 0 and step <= self._expected_steps[0],
            rtol=self._rtol,
            atol=self._atol,
        )
        if self._raise:
            raise ResumeDivergenceError(
                message,
                step=step,
                checkpoint_step=self._restored_step,
                name=name,
                recorded=recorded,
                observed=observed,
            )
        if self._open is not None:  # from here on this run makes a new history
            for later in [s for s in self._open if s > step]:
                del self._open[later]
        _LOG.warning("%s", message)

    # -- the journal --------------------------------------------------------------------

    def _read(self) -> dict[int, dict[int, Digest]]:
        assert self._directory is not None
        try:
            return read_journal(self._directory)
        except (OSError, ValueError) as exc:
            _LOG.warning("resume check: %s; the re-run steps are not checked this time", exc)
            return {}

    def _remove_temps(self) -> None:
        assert self._directory is not None
        try:
            remove_journal_temps(self._directory)
        except OSError as exc:  # only untidy: the next write uses a fresh temp name
            _LOG.info("resume check: cannot remove old journal temp files: %s", exc)

    def _write(self) -> None:
        if not self._writable or self._directory is None:
            return
        try:
            write_journal(self._directory, self._windows)
            self._unwritten = False
        except OSError as exc:
            self._writable = False
            _LOG.warning(
                "resume check: cannot write its journal in %s (%s); a resume of this run "
                "will not be checked",
                self._directory,
                exc.strerror or exc,
            )


def divergence_message(
    *,
    step: int,
    checkpoint_step: int,
    directory: Path | None,
    difference: Difference,
    first_step_differs: bool,
    rtol: float,
    atol: float,
) -> str:
    """The report: where, both values, what that suggests, the suspects and the way out."""
    name, recorded, observed = difference
    what = f"{name!r}" if name else "the value"
    if first_step_differs:
        lead = (
            "The first re-run step already differs; it depends only on the restored "
            "weights and its batch, so suspect the data position or an RNG first."
        )
    else:
        lead = (
            "Earlier re-run steps matched, so the restored weights were right; suspect "
            "what changes the update (a scheduler, optimizer state) or the data position."
        )
    suspects = "; ".join(f"({i}) {s}" for i, s in enumerate(_SUSPECTS, 1))
    return (
        f"resume check: step {step}, re-run after restoring checkpoint {checkpoint_step} "
        f"from {directory}, returned {what} = {observed!r}, but the run that wrote that "
        f"checkpoint returned {recorded!r} at this step (tolerance rtol={rtol:g}, "
        f"atol={atol:g}): the resumed run does not train like the one it resumes. {lead} "
        f"Usual suspects: {suspects}. To accept the difference, pass "
        "resume_check=ResumeCheckHook(rtol=...) to MonitoredTrainingSession, or turn the "
        "check off with resume_check=False."
    )


def _same_directory(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
