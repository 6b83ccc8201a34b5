"""The single writer of a checkpoint prefix in object storage: a lease object.

Object storage has no locks, so the writer creates ``<root>/.trainhooks.lease`` with an
exclusive put, holding its identity (a random id, host, pid) and an expiry, and renews it
every quarter of its time to live from a background thread, each renewal a conditional
replace of exactly what it wrote. A second writer gets ``CheckpointLockedError`` naming the
holder. A lease may be taken over when it has expired (by the taker's clock), or at once
when its holder ran on this host and its process is gone.

Clock assumption: the clocks of the machines writing one prefix differ by less than three
quarters of the lease's time to live (45 s at the default 60 s); a holder whose renewals
fail longer than that loses its lease and its next save raises ``CheckpointLockedError``.
There is no fencing token: a writer frozen past its expiry (a stopped VM) may finish one
upload after another has taken over; its manifest then still goes through the exclusive
create, so it can never overwrite a committed checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from trainhooks._exceptions import CheckpointLockedError
from trainhooks._store._remote._objects import ObjectStore

__all__ = ["Lease"]

DEFAULT_TTL = 60.0


class Lease:
    """A held lease on ``path``; :meth:`check` before every commit, :meth:`release` at the end."""

    def __init__(self, objects: ObjectStore, path: str, url: str, ttl: float | None = None) -> None:
        self.objects, self.path, self.url = objects, path, url
        self.ttl = (
            ttl
            if ttl is not None
            else float(os.environ.get("TRAINHOOKS_LEASE_SECONDS", DEFAULT_TTL))
        )
        self.owner = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lost: str | None = None
        self._body = self._new_body()
        self._take()
        self._thread = threading.Thread(
            target=self._renew_loop, name="trainhooks-lease", daemon=True
        )
        self._thread.start()

    def check(self) -> None:
        """Raise ``CheckpointLockedError`` if this writer no longer holds the lease."""
        with self._lock:
            lost = self._lost
            expires = json.loads(self._body)["expires"]
        if lost is None and time.time() > expires:
            lost = "it expired before it could be renewed"
        if lost is not None:
            raise CheckpointLockedError(
                f"this writer lost its lease on {self.url} ({lost}); another writer may own "
                "the prefix now: stop this job, or open a new Saver once the other has stopped",
                path=self.url,
            )

    def renew(self) -> None:
        with self._lock:
            if self._lost is not None:
                return
            body = self._new_body()
            try:
                self.objects.replace(self.path, body, self._body)
            except FileExistsError:
                self._lost = "another writer replaced it"
                return
            self._body = body

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        with self._lock:
            if self._lost is None:
                self._lost = "released"
                try:
                    if self.objects.read(self.path, 0, len(self._body) + 1) == self._body:
                        self.objects.delete([self.path])
                except Exception:
                    pass

    def _new_body(self) -> bytes:
        holder = {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "expires": time.time() + self.ttl,
        }
        return json.dumps(holder, sort_keys=True).encode()

    def _take(self) -> None:
        try:
            self.objects.create(self.path, self._body)
            return
        except FileExistsError:
            pass
        current = self.objects.read(self.path, 0, 64 * 1024)
        holder = _parse(current)
        if not _takeable(holder):
            raise CheckpointLockedError(
                f"{self.url} is being written by another saver (host {holder.get('host')}, "
                f"pid {holder.get('pid')}, lease until {time.ctime(holder.get('expires', 0))}); "
                "stop it, or wait for its lease to expire if it died on another machine",
                path=self.url,
            )
        try:
            self.objects.replace(self.path, self._body, current)
        except FileExistsError:
            raise CheckpointLockedError(
                f"{self.url}: another writer took the expired lease first", path=self.url
            ) from None

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.renew()
            except Exception:
                continue


def _parse(data: bytes) -> dict[str, Any]:
    try:
        holder = json.loads(data)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _takeable(holder: dict[str, Any]) -> bool:
    """True when the lease's holder is surely gone: expired, or dead on this host."""
    expires = holder.get("expires")
    if not isinstance(expires, (int, float)) or time.time() > expires:
        return True
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return False  # another Saver of this process: a real second writer
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
