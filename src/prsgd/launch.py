"""Run a launcher (horovodrun, mpirun, ...) so that a signal to it ends the job with 128 + signal.

    python -m prsgd.launch horovodrun -np 2 --gloo python -m prsgd.train ...

Plain `horovodrun` ends its ranks on SIGTERM/SIGINT (they record `interrupted`) but then exits
1, so a caller cannot tell a stopped job from a failed one. This wrapper starts the launcher in
a session of its own, forwards SIGTERM/SIGINT/SIGHUP to its whole process group, waits for it,
and exits 128 + the signal it got (143 for SIGTERM, 130 for SIGINT); otherwise the launcher's
own exit status. The launcher also gets SIGTERM if this wrapper dies (PR_SET_PDEATHSIG), so
nothing outlives it. `make train` and `make smoke` launch through it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_S = 60.0   # after a forwarded signal, how long the job may take to end before SIGKILL


def run(cmd: list[str]) -> int:
    from .sweep import _die_with_parent
    got: list[int] = []
    proc = subprocess.Popen(cmd, start_new_session=True,
                            preexec_fn=_die_with_parent(os.getpid()))

    def forward(signum, frame):
        got.append(signum)
        try:
            os.killpg(proc.pid, signal.SIGTERM if signum == signal.SIGHUP else signum)
        except ProcessLookupError:
            pass

    for s in FORWARDED:
        signal.signal(s, forward)
    while True:
        try:
            rc = proc.wait(timeout=GRACE_S if got else None)
            break
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return 128 + got[0] if got else rc


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0] + "\n\nusage: python -m prsgd.launch COMMAND "
              "[ARGS...]", file=sys.stderr)
        return 2
    try:
        return run(argv)
    except OSError as e:
        print(f"prsgd.launch: error: {argv[0]}: {e.strerror or e}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
