"""The job-wide per-host cap, shared at run time by the tasks running on one machine.

``HostSlots`` gives each host ``per_host`` slots, one lock file each in a folder the driver makes for
the job (``job_slots_folder``). A request to a host starts only while it holds one of its host's slots,
taken with ``try_acquire`` (never waits) and given back with ``release``, so one host never sees more
than ``per_host`` requests at once from all the tasks sharing the folder, whichever task asks: a task
whose shard holds most of a slow host's URLs gets all of them while the others have none to ask.

A slot is ``fcntl.flock`` on its own open of the slot's file: flock locks belong to the open file
description, so two threads of one process exclude each other as two processes do, and the kernel
drops the lock when the holder's descriptor closes, also when the process dies (a killed task leaks
no slot). Files are named by a hash of the host (any host string: empty, long, unicode) and slot
number, made on first use and removed with the folder.

A host's Retry-After pause is shared the same way: ``pause`` writes its end (wall-clock time) into
each of the host's slot files, and ``paused_until`` reads it through the slot just taken (one read
per request), so a 429 to one task pauses the host for every task on the machine instead of the
others asking on (each 429 of theirs a wasted request, and URLs that run out of their retry budget). Local disk only: the tasks must share the
machine (Spark's local master); on a cluster the static split, ``pipeline.fetch.hosts.task_host_cap``,
stays.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator


class HostSlots:
    """``per_host`` request slots per host, shared through the lock files under ``folder``."""

    def __init__(self, folder: str, per_host: int):
        if per_host < 1:
            raise ValueError(f"host slots: per_host must be at least 1, got {per_host}")
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"host slots: no folder {folder!r} (the job made it and removes it at its end)")
        self.folder, self.per_host = folder, per_host

    def __reduce__(self):  # pickled to a task as its folder and count (the lock files are the state)
        return HostSlots, (self.folder, self.per_host)

    def path(self, host: str, slot: int) -> str:
        digest = hashlib.sha256(host.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return os.path.join(self.folder, f"{digest}.{slot}")

    def try_acquire(self, host: str, limit: int | None = None) -> int | None:
        """Take a free slot of ``host`` among its first ``limit`` (default: all); its token, or None
        when all are held. Never waits."""
        for slot in range(min(limit or self.per_host, self.per_host)):
            fd = os.open(self.path(host, slot), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                continue
            return fd
        return None

    def release(self, token: int) -> None:
        """Give a slot back (closing its descriptor drops the lock)."""
        os.close(token)

    def pause(self, host: str, seconds: float) -> None:
        """Pause ``host`` for every task sharing the folder (its Retry-After), unless paused longer already."""
        until = time.time() + seconds
        for slot in range(self.per_host):
            fd = os.open(self.path(host, slot), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if _pause_of(fd) < until:
                    os.pwrite(fd, _PAUSE.pack(until), 0)
            finally:
                os.close(fd)

    def paused_for(self, token: int) -> float:
        """Seconds the host of a slot just taken stays paused (0: not paused)."""
        return max(0.0, _pause_of(token) - time.time())


_PAUSE = struct.Struct("<d")  # a slot file's content: the end of its host's pause (time.time()), or nothing


def _pause_of(fd: int) -> float:
    data = os.pread(fd, _PAUSE.size, 0)
    return _PAUSE.unpack(data)[0] if len(data) == _PAUSE.size else 0.0


@contextlib.contextmanager
def job_slots_folder() -> Iterator[str]:
    """A fresh folder for one job's slot files on local disk, removed when the job ends (also on failure)."""
    folder = tempfile.mkdtemp(prefix="wit-host-slots-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
