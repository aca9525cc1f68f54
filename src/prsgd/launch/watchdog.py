"""No rank outlives its launcher (issue 21 §4).

A rank started by a launcher (horovodrun, torchrun, mpirun, or sshd for a rank horovodrun started
on another node) used to run on when the launcher died or gave the job up: `kill -9 torchrun`
left both ranks training to the end, and on the lab a cut link made horovodrun exit while the
ranks lived on and, once the link came back, wrote `done` after the launcher had reported failure.

`start()` runs a daemon thread in each rank that watches the process chain from the rank's parent
up to the nearest launcher, each process by pid AND start time (a pid can be reused). When any of
them is gone (the launcher was killed, exited, or sshd closed the session of a node whose link
was cut: the lab's sshd drops a silent client after ClientAliveInterval x ClientAliveCountMax)
the watchdog
  1. sends the rank SIGTERM: the trainer's signal handler stops the run at the next Python
     instruction, records `interrupted` in status.json naming the lost launcher
     (`launcher_lost`) and exits, as for any SIGTERM;
  2. if the rank is still alive GRACE_S later (its main thread is stuck inside a collective whose
     peer is gone, where no Python signal handler runs), records `interrupted` itself unless the
     run already recorded its end, and ends the process with os._exit: nothing is written after.

The bound: the launcher is gone -> the rank has exited within POLL_S + GRACE_S (plus the exit).
"""
from __future__ import annotations

import os
import signal
import threading
import time

POLL_S = 0.5        # how often the chain is checked
GRACE_S = 5.0       # SIGTERM -> hard exit, for a rank stuck in a collective
BOUND_S = POLL_S + GRACE_S
EXIT_CODE = 128 + signal.SIGTERM
# Processes that start ranks. The chain is watched up to the nearest one (inclusive); processes
# above it (the user's shell, a nohup'ed parent) may come and go.
LAUNCHERS = ("horovodrun", "torchrun", "torch.distributed.run", "torch.distributed.launch",
             "mpirun", "mpiexec", "orterun", "prterun", "orted", "prted", "slurmstepd", "sshd")


# Set by the launchers in each rank's environment: only a rank is watched (a packed run started
# by hand from an ssh session and left running with nohup must not stop when the session ends).
RANK_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "TORCHELASTIC_RUN_ID",
                  "SLURM_PROCID")


def _is_launcher(proc) -> bool:
    try:
        words = [proc.name(), *proc.cmdline()[:3]]
    except Exception:        # gone or not ours to read: not a launcher we can name
        return False
    return any(name in os.path.basename(w) or w == name for w in words for name in LAUNCHERS)


def launcher_chain(pid: int | None = None) -> list[tuple[int, float, str]]:
    """(pid, start time, name) of each process from `pid`'s parent up to the nearest launcher;
    [] when no ancestor is a launcher (a rank started by hand, the packed backend)."""
    import psutil
    chain = []
    proc = psutil.Process(pid or os.getpid()).parent()
    while proc is not None and proc.pid > 1:
        chain.append((proc.pid, proc.create_time(), proc.name()))
        if _is_launcher(proc):
            return chain
        proc = proc.parent()
    return []


def first_gone(chain) -> str | None:
    """The first process of the chain that no longer exists (or is another process by now)."""
    import psutil
    for pid, started, name in chain:
        try:
            p = psutil.Process(pid)
            if p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE:
                continue
        except psutil.NoSuchProcess:
            pass
        return f"{name} (pid {pid})"
    return None


class Watchdog:
    def __init__(self, chain, record_end, poll_s: float = POLL_S, grace_s: float = GRACE_S):
        self.chain, self.record_end = chain, record_end
        self.poll_s, self.grace_s = poll_s, grace_s
        self.run_ended = threading.Event()    # the run recorded its own end: do not overwrite
        self.lost: str | None = None
        self.thread = threading.Thread(target=self._watch, name="prsgd-launcher-watchdog",
                                       daemon=True)

    def launcher_lost(self) -> str | None:
        """The process of the chain that is gone ("horovodrun (pid 123)"), or None: what the
        run's own record of an interruption names when the launcher's loss caused it (a
        SIGTERM from this thread, or a collective broken by a peer that lost it first)."""
        return self.lost or first_gone(self.chain)

    def stop(self) -> None:
        """The run recorded how it ended. A watchdog that already lost the launcher keeps its
        hard-exit timer: the shutdown after it (a Horovod/Gloo teardown) may hang too.

        Otherwise wait for the thread to end (it wakes at once). A daemon thread still running
        when the interpreter finalises is killed by pthread_exit when it next takes the GIL; our
        thread ends by dropping its target, this object, whose `record_end` holds the whole
        trainer, so the last tensors are freed from that thread: torch's tensor destructor takes
        the GIL inside a noexcept C++ frame, the forced unwind meets it and std::terminate
        aborts the finished rank ("terminate called without an active exception", exit 134;
        gdb on the core: Py_FinalizeEx in the main thread, take_gil -> PyThread_exit_thread
        under THPVariable_dealloc in this one). It failed CI once, and 1 of ~50 contended
        two-rank runs here."""
        self.run_ended.set()
        if self.lost is None and self.thread.is_alive() \
                and self.thread is not threading.current_thread():
            self.thread.join(timeout=self.poll_s + 5.0)

    def _watch(self) -> None:
        while self.lost is None:
            if self.run_ended.wait(self.poll_s):
                return
            self.lost = first_gone(self.chain)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(self.grace_s)
        if not self.run_ended.is_set():
            try:
                self.record_end(f"stopped: the launcher is gone ({self.lost}); a collective "
                                f"did not return within {self.grace_s:g} s")
            except BaseException:
                pass
        os._exit(EXIT_CODE)


def start(record_end) -> Watchdog | None:
    """Watch this rank's launcher; `record_end(message)` records `interrupted` in status.json
    when the rank must be ended from outside its main thread. None when no launcher started us
    (not a rank, or PRSGD_NO_WATCHDOG=1 says not to watch)."""
    if os.environ.get("PRSGD_NO_WATCHDOG") == "1" or \
            not any(v in os.environ for v in RANK_VARIABLES):
        return None
    try:
        chain = launcher_chain()
    except Exception:       # psutil missing or /proc unreadable: run unwatched, as before
        return None
    if not chain:
        return None
    dog = Watchdog(chain, record_end)
    dog.thread.start()
    return dog
