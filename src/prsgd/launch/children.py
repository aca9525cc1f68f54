"""Child processes a driver supervises (the sweep's runs, `supervise`'s launcher): each in a session
of its own, so that an interrupt or a timeout ends every rank of it; SIGTERM to it when the driver
dies, however it dies; the driver's own SIGINT/SIGTERM deferred while a child is being started.
"""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def die_with_parent(parent: int):
    """preexec_fn: the child (horovodrun, or a packed trainer) gets SIGTERM when the driver
    dies, however it dies (Linux PR_SET_PDEATHSIG); horovodrun then ends its ranks, which record
    `interrupted`. Elsewhere the driver's own SIGTERM/SIGINT handling still ends the group."""
    def preexec():
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)   # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:   # the driver died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec if sys.platform.startswith("linux") else None


class Interrupts:
    """The driver's SIGINT/SIGTERM: KeyboardInterrupt now, or right after a deferred section."""
    deferred = False
    pending = False
    signum = signal.SIGINT

    @classmethod
    def handler(cls, signum, frame):
        cls.signum = signum
        if cls.deferred:
            cls.pending = True
        else:
            raise KeyboardInterrupt

    @classmethod
    def install(cls) -> None:
        signal.signal(signal.SIGTERM, cls.handler)
        signal.signal(signal.SIGINT, cls.handler)

    @classmethod
    def raise_pending(cls) -> None:
        if cls.pending:
            cls.pending = False
            raise KeyboardInterrupt


class signals_deferred:
    def __enter__(self):
        Interrupts.deferred = True

    def __exit__(self, *exc):
        Interrupts.deferred = False


def kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _pump(pipe, log_path: Path, tail: collections.deque):
    with open(log_path, "w") as log:
        for line in pipe:
            log.write(line)
            log.flush()
            tail.append(line.rstrip("\n"))


def run_logged(cmd: list[str], stdout_log: Path, stderr_log: Path, *, env: dict,
               timeout: float | None, on_tick=None, tick_s: float = 1.0):
    """Run `cmd` to its end with its output copied to the two log files, calling `on_tick()`
    every `tick_s` seconds while it runs. Returns (return code or None on timeout, the last
    lines of its stderr)."""
    out_tail, err_tail = collections.deque(maxlen=200), collections.deque(maxlen=200)
    with signals_deferred():   # an interrupt inside Popen would orphan the started ranks
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                bufsize=1, start_new_session=True, env=env,
                                preexec_fn=die_with_parent(os.getpid()))
    try:
        Interrupts.raise_pending()
    except KeyboardInterrupt:
        kill_group(proc)
        raise
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, stdout_log, out_tail),
                              daemon=True),
             threading.Thread(target=_pump, args=(proc.stderr, stderr_log, err_tail),
                              daemon=True)]
    for t in pumps:
        t.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        rc = _wait(proc, deadline, on_tick, tick_s)
    except BaseException:
        kill_group(proc)
        raise
    for t in pumps:
        t.join(timeout=10)
    return rc, list(err_tail)


def _wait(proc, deadline, on_tick, tick_s) -> int | None:
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            kill_group(proc)
            return None
        try:
            return proc.wait(timeout=tick_s if left is None else min(tick_s, left))
        except subprocess.TimeoutExpired:
            if on_tick is not None:
                on_tick()
