"""One live owner per run directory (and per sweep directory): an OS-level lock.

The owner holds `fcntl.flock(LOCK_EX)` on `DIR/.owner`, a file that also says who it is (pid,
parent pid, host, command, since when). The kernel drops the lock when its holder dies, however
it dies (SIGKILL included), so a crashed owner never blocks anyone: the next owner finds the file,
takes the lock and overwrites the description. A second would-be owner while the first is alive
is refused with a message naming the first's PIDs and command.

An owner removes `.owner` when it lets go (while still holding the lock); one that takes the
lock checks that the file it locked is still the one at the path, so the removal cannot hand two
processes "the" lock on two different files.

Under Horovod rank 0 (the writing rank) owns the run directory; the sweep driver owns the sweep
directory and, before it deletes, restarts or resumes a run directory, asks `holder()` whether a
previous process still owns it.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from prsgd.records.rundir import OWNER as OWNER_FILE
_held: dict[str, "Owner"] = {}   # directories this process owns (acquire is re-entrant)


class OwnedElsewhere(RuntimeError):
    """The directory has a live owner; the message names its PIDs."""

    def __init__(self, path: Path, info: dict):
        self.path, self.info = path, info
        super().__init__(f"{path} is in use by a live process: {describe(info)}; wait for it "
                         "to end or stop it (kill PID) first")


def describe(info: dict) -> str:
    pids = ", ".join(f"{k} {info[k]}" for k in ("pid", "ppid") if info.get(k))
    where = f" on {info['host']}" if info.get("host") else ""
    cmd = f" ({info['command'][:120]})" if info.get("command") else ""
    return f"{pids or 'unknown pid'}{where}{cmd}"


def _read(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 1 << 16).decode() or "{}")
    except (OSError, ValueError):
        return {}


class Owner:
    """The lock on one directory, held until `release()` (or this process's death)."""

    def __init__(self, directory: Path, fd: int):
        self.directory, self.fd = Path(directory), fd

    @property
    def path(self) -> Path:
        return self.directory / OWNER_FILE

    def release(self) -> None:
        if self.fd < 0:
            return
        _held.pop(str(self.directory.resolve()), None)
        try:
            self.path.unlink(missing_ok=True)   # still under the lock: see the module doc
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def acquire(directory, role: str = "run") -> Owner:
    """Own `directory` (created if missing) or raise OwnedElsewhere naming the live owner."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if (mine := _held.get(str(directory.resolve()))) is not None:
        return mine
    path = directory / OWNER_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _read(fd)
            os.close(fd)
            raise OwnedElsewhere(directory, info) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)   # the previous owner removed the file we locked: lock the new one
    info = {"pid": os.getpid(), "ppid": os.getppid(), "host": socket.gethostname(),
            "role": role, "command": " ".join(sys.argv),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(info) + "\n").encode())
    owner = _held[str(directory.resolve())] = Owner(directory, fd)
    return owner


def acquire_all(directories, role: str = "run") -> list[Owner]:
    """Own every directory, or none of them (OwnedElsewhere for the first one owned)."""
    owners = []
    try:
        for d in directories:
            owners.append(acquire(d, role))
    except BaseException:
        for o in owners:
            o.release()
        raise
    return owners


def release_all() -> None:
    """Let go of every directory this process owns (the end of a command)."""
    for owner in list(_held.values()):
        owner.release()


def holder(directory) -> dict | None:
    """The live owner of `directory` (its description), or None when nobody holds it."""
    path = Path(directory) / OWNER_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(fd) or {"pid": None}
    finally:
        os.close(fd)   # closing drops a shared lock we may have taken
    return None


def wait_until_free(directory, timeout: float, poll: float = 0.2) -> dict | None:
    """Wait up to `timeout` seconds for `directory`'s owner to end; the owner if it did not."""
    deadline = time.monotonic() + timeout
    while (info := holder(directory)) is not None and time.monotonic() < deadline:
        time.sleep(poll)
    return info
