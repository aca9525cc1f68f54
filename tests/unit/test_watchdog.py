"""The launcher watchdog's decisions (prsgd.launch.watchdog), in-process: a process of the
watched chain counts as gone when its pid no longer exists or is another process by now (a
reused pid: another start time). The real thing, with real launchers killed, is
tests/integration/test_launcher_loss*.py."""
import os

import psutil

from prsgd.launch import watchdog


def me() -> tuple[int, float, str]:
    p = psutil.Process()
    return (p.pid, p.create_time(), p.name())


def test_a_live_chain_is_not_gone():
    assert watchdog.first_gone([me()]) is None


def test_a_reused_pid_counts_as_gone():
    pid, started, name = me()
    assert watchdog.first_gone([(pid, started - 1.0, "horovodrun")]) == f"horovodrun (pid {pid})"


def test_a_vanished_pid_counts_as_gone():
    free = max(psutil.pids()) + 1000
    while psutil.pid_exists(free):
        free += 1
    assert watchdog.first_gone([me(), (free, 0.0, "torchrun")]) == f"torchrun (pid {free})"


def test_only_ranks_are_watched(monkeypatch):
    for var in watchdog.RANK_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    assert watchdog.start(lambda msg: None) is None        # a run started by hand
    monkeypatch.setenv("HOROVOD_RANK", "0")
    monkeypatch.setenv("PRSGD_NO_WATCHDOG", "1")
    assert watchdog.start(lambda msg: None) is None


def test_the_stated_bound_is_poll_plus_grace():
    assert watchdog.BOUND_S == watchdog.POLL_S + watchdog.GRACE_S
    assert not watchdog._is_launcher(psutil.Process(os.getpid()))    # pytest is no launcher


def test_stop_returns_once_the_thread_is_gone():
    """A watchdog thread left running into the interpreter's teardown frees the trainer from
    there and aborts a finished rank (see Watchdog.stop): stop() must end the thread."""
    for _ in range(20):    # the thread is mostly still asleep in its first wait when stopped
        dog = watchdog.Watchdog([me()], record_end=lambda msg: None, poll_s=30.0)
        dog.thread.start()
        dog.stop()
        assert not dog.thread.is_alive()
        assert dog.lost is None


def test_the_lost_launcher_is_named_for_the_runs_record():
    """What status.json says when the launcher's loss stopped the run (records/lifecycle.py)."""
    from prsgd.records.lifecycle import lost
    free = max(psutil.pids()) + 1000
    while psutil.pid_exists(free):
        free += 1
    assert lost(None) == ""
    assert lost(watchdog.Watchdog([me()], record_end=print)) == ""
    dog = watchdog.Watchdog([me(), (free, 0.0, "mpirun")], record_end=print)
    assert lost(dog) == f" (the launcher is gone: mpirun (pid {free}))"
