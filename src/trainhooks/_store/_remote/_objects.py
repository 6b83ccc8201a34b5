"""What the checkpoint store needs from object storage, and its fsspec implementation.

The protocol is small on purpose: list a prefix with sizes, read a byte range, create an
object only if absent (the commit), replace an object only if unchanged (the lease),
upload a large object from buffers, delete, abort unfinished uploads. Every service
fsspec reaches can do the first five; S3 adds parallel multipart uploads and conditional
replacement, which :class:`S3Objects` uses. fsspec is imported here only, and lazily.

Parallel transfers run on plain threads (``parallel``), not an executor: a background
save still uploading when the interpreter exits must finish (``_store/_background``), and
``concurrent.futures`` refuses new work by then. An upload given a ``cancel`` event checks
it before every part, so a background save stops between requests (Ctrl-C).
"""

from __future__ import annotations

import contextlib
import errno
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from trainhooks._store._faults import fault_point

__all__ = ["READ_CHUNK", "ObjectStore", "open_objects", "parallel"]

PART_SIZE = 16 * 1024 * 1024  # S3 parts must be >= 5 MiB except the last
READ_CHUNK = 64 * 1024 * 1024  # few large range GETs: each costs a request (moto: a copy)
CONCURRENCY = 8


class ObjectStore(Protocol):
    """Objects named by ``bucket/key`` paths (no scheme)."""

    def list(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix`` (a "directory"), path to size; fresh, never cached."""

    def read(self, path: str, start: int, end: int) -> bytes:
        """Bytes ``start..end`` of ``path`` (fewer if the object is shorter)."""

    def read_into(self, path: str, start: int, out: memoryview) -> None:
        """Fill ``out`` from ``path`` at ``start``, in parallel range reads."""

    def create(self, path: str, data: bytes) -> None:
        """Write ``path`` only if it does not exist; ``FileExistsError`` if it does."""

    def replace(self, path: str, data: bytes, expected: bytes) -> None:
        """Overwrite ``path`` only while it still holds ``expected``; ``FileExistsError``
        if another writer changed it first."""

    def upload(
        self, path: str, buffers: Sequence[memoryview], cancel: threading.Event | None = None
    ) -> int:
        """Write the concatenation of ``buffers`` to ``path``; returns the size written.
        Once ``cancel`` is set, stops before its next request with ``OSError(ECANCELED)``
        and leaves nothing behind."""

    def delete(self, paths: Sequence[str]) -> None:
        """Remove ``paths``; missing ones are ignored."""

    def abort_uploads(self, prefix: str, ours: Callable[[str], bool]) -> int:
        """Abort unfinished uploads under ``prefix`` whose path ``ours`` accepts."""


def open_objects(
    url: str, storage_options: dict[str, Any] | None = None
) -> tuple[ObjectStore, str]:
    """The object store of ``url`` and the root path in it. ``storage_options`` go to
    fsspec as given; credentials otherwise come from the service's usual places."""
    try:
        import fsspec.core
    except ImportError:
        raise ImportError(
            f"{url}: checkpoints on object storage need fsspec and the service's package: "
            "pip install 'trainhooks[s3]' (or [gcs]; adlfs for az://)"
        ) from None
    options = {"use_listings_cache": False, **(storage_options or {})}
    fs, root = fsspec.core.url_to_fs(url, **options)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    objects = S3Objects(fs) if protocol in {"s3", "s3a"} else FsspecObjects(fs)
    return objects, root.rstrip("/")


class FsspecObjects:
    """Any fsspec filesystem; exclusive creation through ``open(path, "xb")``."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def list(self, prefix: str) -> dict[str, int]:
        with contextlib.suppress(AttributeError):
            self.fs.invalidate_cache(prefix)
        try:
            found = self.fs.find(prefix, detail=True, withdirs=False)
        except FileNotFoundError:
            return {}
        return {
            path.rstrip("/"): int(info.get("size") or 0)
            for path, info in found.items()
            if info.get("type") != "directory"
        }

    def read(self, path: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        data: bytes = self.fs.cat_file(path, start=start, end=end)
        return data

    def read_into(self, path: str, start: int, out: memoryview) -> None:
        spans = [(o, min(o + READ_CHUNK, len(out))) for o in range(0, len(out), READ_CHUNK)]

        def fetch(span: tuple[int, int]) -> None:
            data = self.read(path, start + span[0], start + span[1])
            if len(data) != span[1] - span[0]:
                raise EOFError(f"{path} ends before byte {start + span[1]}")
            out[span[0] : span[1]] = data

        parallel(fetch, spans, "trainhooks-read")

    def create(self, path: str, data: bytes) -> None:
        with self.fs.open(path, "xb") as stream:
            stream.write(data)

    def replace(self, path: str, data: bytes, expected: bytes) -> None:
        # Without a conditional overwrite, delete and re-create: the exclusive create
        # still lets only one of two racing writers win.
        if self.read(path, 0, len(expected) + 1) != expected:
            raise FileExistsError(path)
        self.delete([path])
        self.create(path, data)

    def upload(
        self, path: str, buffers: Sequence[memoryview], cancel: threading.Event | None = None
    ) -> int:
        size = 0
        with self.fs.open(
            path, "wb"
        ) as stream:  # a part written by a failure: the caller deletes it
            for buffer in buffers:
                check_cancel(cancel)
                stream.write(buffer)
                size += buffer.nbytes
        return size

    def delete(self, paths: Sequence[str]) -> None:
        if paths:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(list(paths))

    def abort_uploads(self, prefix: str, ours: Callable[[str], bool]) -> int:
        return 0  # uploads through open("wb") leave nothing behind but the object


class S3Objects(FsspecObjects):
    """S3 (and S3-compatible services): parallel multipart uploads streamed from the
    caller's buffers, conditional writes (``If-None-Match``/``If-Match``)."""

    def _call(self, method: str, **kwargs: Any) -> Any:
        return self.fs.call_s3(method, **kwargs)

    def create(self, path: str, data: bytes) -> None:
        bucket, key, _ = self.fs.split_path(path)
        try:
            self._call("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except Exception as exc:
            raise _precondition(exc, path) from exc

    def replace(self, path: str, data: bytes, expected: bytes) -> None:
        bucket, key, _ = self.fs.split_path(path)
        try:
            etag = self._call("head_object", Bucket=bucket, Key=key)["ETag"]
            current = self.read(path, 0, len(expected) + 1)
        except FileNotFoundError:
            raise FileExistsError(path) from None
        if current != expected:
            raise FileExistsError(path)
        try:
            self._call("put_object", Bucket=bucket, Key=key, Body=data, IfMatch=etag)
        except Exception as exc:
            raise _precondition(exc, path) from exc

    def upload(
        self, path: str, buffers: Sequence[memoryview], cancel: threading.Event | None = None
    ) -> int:
        size = sum(b.nbytes for b in buffers)
        check_cancel(cancel)
        if size < 2 * PART_SIZE:
            self.fs.pipe_file(path, b"".join(buffers))
            return size
        bucket, key, _ = self.fs.split_path(path)
        upload = self._call("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
        common = {"Bucket": bucket, "Key": key, "UploadId": upload}

        def send(item: tuple[int, list[memoryview]]) -> dict[str, Any]:
            number, pieces = item
            check_cancel(cancel)
            body = b"".join(pieces)  # one part's copy, never the whole file's
            reply = self._call("upload_part", PartNumber=number, Body=body, **common)
            fault_point("remote_after_part")
            return {"PartNumber": number, "ETag": reply["ETag"]}

        try:
            numbered = list(enumerate(_parts(buffers, PART_SIZE), start=1))
            parts = parallel(send, numbered, "trainhooks-upload")
            check_cancel(cancel)
            self._call("complete_multipart_upload", MultipartUpload={"Parts": parts}, **common)
        except BaseException:
            with contextlib.suppress(Exception):
                self._call("abort_multipart_upload", **common)
            raise
        return size

    def abort_uploads(self, prefix: str, ours: Callable[[str], bool]) -> int:
        bucket, key, _ = self.fs.split_path(prefix)
        aborted = 0
        for item in self._pending_uploads(bucket, key + "/"):
            if ours(f"{bucket}/{item['Key']}"):
                with contextlib.suppress(FileNotFoundError):
                    self._call(
                        "abort_multipart_upload",
                        Bucket=bucket,
                        Key=item["Key"],
                        UploadId=item["UploadId"],
                    )
                aborted += 1
        return aborted

    def _pending_uploads(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        """Every unfinished multipart upload under ``prefix``, page by page (1,000 a page)."""
        found: list[dict[str, Any]] = []
        markers: dict[str, str] = {}
        while True:
            reply = self._call("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **markers)
            found += reply.get("Uploads", [])
            if not reply.get("IsTruncated"):
                return found
            markers = {
                "KeyMarker": reply.get("NextKeyMarker", ""),
                "UploadIdMarker": reply.get("NextUploadIdMarker", ""),
            }


def _parts(buffers: Sequence[memoryview], part_size: int) -> list[list[memoryview]]:
    """Cut the concatenation of ``buffers`` into parts of ``part_size`` bytes (the last may
    be shorter), as lists of views: no byte is copied here."""
    parts: list[list[memoryview]] = [[]]
    room = part_size
    for buffer in buffers:
        view = buffer.cast("B") if buffer.format != "B" else buffer
        while view.nbytes:
            if room == 0:
                parts.append([])
                room = part_size
            piece = view[:room]
            parts[-1].append(piece)
            room -= piece.nbytes
            view = view[piece.nbytes :]
    return parts


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise ``OSError(ECANCELED)`` once ``cancel`` is set (a background save stopping)."""
    if cancel is not None and cancel.is_set():
        raise OSError(errno.ECANCELED, "the save was cancelled before its commit point")


_T = TypeVar("_T")
_R = TypeVar("_R")


def parallel(work: Callable[[_T], _R], items: Sequence[_T], name: str) -> list[_R]:
    """``[work(item) for item in items]`` on up to ``CONCURRENCY`` plain threads; the first
    error stops the others taking new items and is raised once all have stopped."""
    results: list[_R | None] = [None] * len(items)
    errors: list[BaseException] = []
    lock = threading.Lock()
    pending = iter(range(len(items)))

    def worker() -> None:
        while True:
            with lock:
                index = None if errors else next(pending, None)
            if index is None:
                return
            try:
                results[index] = work(items[index])
            except BaseException as exc:
                with lock:
                    errors.append(exc)

    threads = []
    for i in range(min(CONCURRENCY, len(items)) - 1):  # the calling thread is one more
        thread = threading.Thread(target=worker, name=f"{name}-{i}", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no new threads (interpreter shutdown): this one works alone
            break
        threads.append(thread)
    worker()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]  # every slot was filled


_PRECONDITION = re.compile(r"PreconditionFailed|ConditionalRequestConflict|\b412\b")


def _precondition(exc: Exception, path: str) -> Exception:
    """A failed ``If-None-Match``/``If-Match`` as ``FileExistsError``; anything else as is."""
    if isinstance(exc, FileExistsError) or _PRECONDITION.search(f"{exc!r} {exc}"):
        return FileExistsError(path)
    return exc
