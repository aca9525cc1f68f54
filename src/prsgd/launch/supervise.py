"""Run a launcher (horovodrun, mpirun, ...) so that a signal to it ends the job with 128 + signal.

    python -m prsgd.supervise horovodrun -np 2 --gloo python -m prsgd.train ...

Plain `horovodrun` ends its ranks on SIGTERM/SIGINT (they record `interrupted`) but then exits
1, so a caller cannot tell a stopped job from a failed one. This wrapper starts the launcher in
a session of its own, forwards SIGTERM/SIGINT/SIGHUP to its whole process group, waits for it,
and exits 128 + the signal it got (143 for SIGTERM, 130 for SIGINT); otherwise the launcher's
own exit status. The launcher also gets SIGTERM if this wrapper dies (PR_SET_PDEATHSIG), so
nothing outlives it. `make train` and `make smoke` launch through it.

When a rank exits non-zero (a bad argument, say), horovodrun stops the job and prints a Python
traceback of its own ending in "RuntimeError: Horovod detected that one or more processes exited
with non-zero status"; this wrapper prints one line instead and exits with that rank's status
(2 for a refused argument, as without a launcher). Every other line passes through unchanged.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

from prsgd.launch.children import die_with_parent

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
GRACE_S = 60.0   # after a forwarded signal, how long the job may take to end before SIGKILL


HOROVOD_GAVE_UP = "Horovod detected that one or more processes exited with non-zero status"


def filter_stderr(pipe, out, verdict: dict) -> None:
    """Copy the launcher's stderr, holding back a traceback of the launcher itself (not a rank's:
    those lines start with `[rank]<stderr>:`) until it is known to be Horovod's 'a rank failed'."""
    held: list[str] = []
    for line in pipe:
        if held or line.startswith("Traceback (most recent call last):"):
            held.append(line)
            continue
        out.write(line)
        out.flush()
    text = "".join(held)
    if HOROVOD_GAVE_UP in text:
        name = re.search(r"Process name: (\S+)", text)
        code = re.search(r"Exit code: (-?\d+)", text)
        verdict["code"] = int(code.group(1)) if code else None
        out.write(f"prsgd.supervise: rank {name.group(1) if name else '?'} exited with status "
                  f"{verdict['code']}; horovodrun stopped the job (its messages are above)\n")
    else:
        out.write(text)
    out.flush()


def run(cmd: list[str]) -> int:
    got: list[int] = []
    verdict: dict = {}
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.PIPE, text=True,
                            bufsize=1, preexec_fn=die_with_parent(os.getpid()))
    pump = threading.Thread(target=filter_stderr, args=(proc.stderr, sys.stderr, verdict),
                            daemon=True)
    pump.start()

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
    pump.join(timeout=10)
    if got:
        return 128 + got[0]
    if rc != 0 and verdict.get("code"):   # a rank's own status (horovodrun says 1)
        return verdict["code"]
    return rc


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0] + "\n\nusage: python -m prsgd.supervise COMMAND "
              "[ARGS...]", file=sys.stderr)
        return 2
    try:
        return run(argv)
    except OSError as e:
        print(f"prsgd.supervise: error: {argv[0]}: {e.strerror or e}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
