"""Exit codes of the ``trainhooks`` command and the one-line messages for failures.

Scripts branch on the exit code, so each kind of failure has its own and they never
change meaning:

====  ==================================================================================
0     success (``verify``: every checkpoint checked is intact)
1     a checkpoint is corrupt: a checksum, size or structure check failed
2     usage error, or the path does not exist / is not a checkpoint / holds none
3     the operation could not be done: directory locked by a live writer, an I/O or
      permission error, a format this version does not know
4     internal error (a bug in trainhooks; rerun with ``TRAINHOOKS_DEBUG=1`` for the
      traceback and please report it)
130   interrupted (Ctrl-C)
====  ==================================================================================

Every failure prints exactly one line, ``trainhooks: error: ...``, on stderr; never a
traceback (the store's exceptions already name the path, step and cause). A failure of an
object-storage service (credentials, endpoint, permissions) is exit 3, like an I/O error;
the values of the credential variables are masked in every line, should a service's
message ever quote one.
"""

from __future__ import annotations

import os

from trainhooks import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointLockedError,
    CheckpointNotFoundError,
    TrainhooksError,
)

EXIT_OK = 0
EXIT_CORRUPT = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure the CLI itself detects (bad path, nothing to show), with its exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def exit_code_for(exc: BaseException) -> int:
    """The documented exit code for an exception escaping a command."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, CheckpointCorruptError):
        return EXIT_CORRUPT
    if isinstance(exc, CheckpointNotFoundError):
        return EXIT_USAGE
    if isinstance(exc, (CheckpointLockedError, CheckpointError, OSError)) or _from_service(exc):
        return EXIT_FAILED
    if isinstance(exc, TrainhooksError):
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_INTERNAL


def corruption_parts(exc: CheckpointCorruptError, text: str = "") -> list[str]:
    """``file F``, ``tensor 'T'``, ``bytes a..b``, ``step N`` from the error, where known.

    With ``text``, only the parts that ``text`` (the store's message) does not already say.
    """
    parts: list[str] = []
    if exc.file is not None and exc.file not in text:
        parts.append(f"file {exc.file}")
    if exc.tensor is not None and repr(exc.tensor) not in text:
        parts.append(f"tensor {exc.tensor!r}")
    if exc.byte_range is not None:
        start, end = exc.byte_range
        if f"{start}..{end}" not in text:
            parts.append(f"bytes {start}..{end}")
    if exc.step is not None and f"step {exc.step}" not in text:
        parts.append(f"step {exc.step}")
    return parts


def error_line(exc: BaseException) -> str:
    """The single line printed on stderr for ``exc`` (no newlines, no traceback)."""
    if isinstance(exc, KeyboardInterrupt):
        text = "interrupted"
    elif isinstance(exc, OSError) and not str(exc).strip():
        text = f"{type(exc).__name__} on {exc.filename!r}"
    elif _from_service(exc):
        text = f"{type(exc).__name__}: {exc}"
    elif isinstance(exc, (TrainhooksError, CliError, OSError)):
        text = str(exc)
        if isinstance(exc, CheckpointCorruptError):
            missing = corruption_parts(exc, text)
            if missing:  # make sure file, tensor and step are named even if the message omits one
                text = f"{text} ({', '.join(missing)})"
    else:
        text = f"internal error: {type(exc).__name__}: {exc}"
        if not os.environ.get("TRAINHOOKS_DEBUG"):
            text += " (rerun with TRAINHOOKS_DEBUG=1 for the traceback; please report it)"
    text = " ".join(text.split())  # one line, whatever the message contained
    return f"trainhooks: error: {mask_secrets(text)}"


# the client libraries of the object stores fsspec reaches; their errors are not our bugs
_SERVICE_PACKAGES = {"botocore", "aiobotocore", "s3fs", "fsspec", "gcsfs", "google", "adlfs"}
_SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
)


def _from_service(exc: BaseException) -> bool:
    return type(exc).__module__.partition(".")[0] in _SERVICE_PACKAGES


def mask_secrets(text: str) -> str:
    """``text`` with the value of every credential variable set here replaced by ``***``."""
    for name in _SECRET_VARIABLES:
        value = os.environ.get(name, "")
        if len(value) >= 8:  # a short value would mask ordinary words (real keys: 20+)
            text = text.replace(value, "***")
    return text
