"""A run's life as its status.json tells it: `running`, then `done`, `diverged`, `interrupted`
(SIGTERM/SIGINT, or a peer rank stopped by one) or `failed`, with epoch, step and a message.

`RunLifecycle.guard` wraps the training loop: SIGTERM/SIGINT raise `Interrupted`, the outcome is
recorded in every run directory and the exception goes on. Whether an error means a peer rank was
stopped (not broken) is the backend's call (`Comm.stopped_by_peer`). Anything that must live
exactly as long as the guarded loop (a watchdog) is one `lifecycle.watch(context_manager)`.
"""
from __future__ import annotations

import os
import signal
import time
from contextlib import ExitStack, contextmanager

from prsgd.launch import watchdog
from prsgd.records import rundir

STATUSES = ("running", "done", "diverged", "interrupted", "failed")


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived. A BaseException, so that no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


def lost(dog) -> str:
    """What status.json adds when the run's launcher is gone (launch/watchdog.py), else ''."""
    gone = dog.launcher_lost() if dog is not None else None
    return f" (the launcher is gone: {gone})" if gone else ""


class RunLifecycle:
    """status.json of every run directory of this process (one per packed run; rank 0 writes) and
    the guard around the training loop. `checkpoint`: the run's Checkpointer (which epoch is
    saved, where a resume came from, the ownership locks to release at the end)."""

    def __init__(self, *, comm, run_dirs, loop, num_epochs: int, checkpoint):
        self.comm, self.run_dirs, self.loop = comm, list(run_dirs), loop
        self.num_epochs, self.checkpoint = num_epochs, checkpoint
        self.is_writer = comm.rank == 0
        self._watches: list = []

    def watch(self, context_manager) -> None:
        """Enter `context_manager` when the guarded loop starts and exit it when it ends."""
        self._watches.append(context_manager)

    def status(self, status: str, message: str = "", per_run: dict | None = None) -> None:
        """status.json of every run directory; `per_run`: run index -> (status, message) for
        runs whose outcome differs (a packed sweep where some runs diverged)."""
        if not self.is_writer:
            return
        loop, ck = self.loop, self.checkpoint
        for k, run_dir in enumerate(self.run_dirs):
            st, msg = (per_run or {}).get(k, (status, message))
            run_dir.mkdir(parents=True, exist_ok=True)
            rundir.write_status(run_dir, {
                "status": st, "message": msg, "run_id": run_dir.name,
                "epoch": loop.epoch, "step": loop.step,
                "epochs": self.num_epochs,   # Algorithm 3: epochs of shared rounds
                "checkpoint_epoch": ck.saved_epoch,
                "resumed_from_epoch": ck.resumed_from, "pid": os.getpid(),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    @contextmanager
    def guard(self, diverged_type):
        """Around the training loop. A diverged exception's `runs` (indices) name the packed runs
        that diverged; the others stopped with them and are `failed`, saying why."""
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

        def on_signal(signum, frame):
            raise Interrupted(signum)

        for s in previous:
            signal.signal(s, on_signal)
        self.status("running")
        # a rank whose launcher is gone stops (launch/watchdog.py); stopped before the outcome
        # is recorded below, so it never overwrites it
        dog = watchdog.start(lambda msg: self._last_status("interrupted", msg))
        try:
            with ExitStack() as watches:
                for w in self._watches:
                    watches.enter_context(w)
                yield
        except diverged_type as e:
            bad = getattr(e, "runs", None) or range(len(self.run_dirs))
            others = {k: ("failed", f"stopped: a run packed with it diverged ({e})")
                      for k in range(len(self.run_dirs)) if k not in bad}
            self._last_status("diverged", str(e), per_run=others)
            raise
        except Interrupted as e:
            # the signal, and the launcher when it is gone (the watchdog's SIGTERM, or one
            # from a launcher's helper process that outlived it: horovodrun's)
            self._last_status("interrupted", f"{e}{lost(dog)}; {self._where()}")
            raise
        except BaseException as e:
            if self.comm.stopped_by_peer(e, self.loop.last_step_at):
                self._last_status("interrupted", f"a peer rank stopped ({e.__class__.__name__})"
                                  f"{lost(dog)}; {self._where()}")
                raise Interrupted(signal.SIGTERM) from e
            self._last_status("failed", f"{e.__class__.__name__}: {e}")
            raise
        else:
            self.status("done")
        finally:
            if dog is not None:
                dog.stop()
            for s, h in previous.items():
                signal.signal(s, h)
            self.checkpoint.release()

    def _where(self) -> str:
        saved = self.checkpoint.saved_epoch
        return ("no checkpoint yet: --resume starts it over" if saved is None
                else f"--resume continues from the checkpoint of epoch {saved}")

    def _last_status(self, status: str, message: str, per_run: dict | None = None) -> None:
        """Record how the run ended where the disk still allows it: an I/O failure must not
        hide the error that ended the run (a read-only run dir cannot take status.json)."""
        try:
            self.status(status, message, per_run)
        except OSError:
            pass
