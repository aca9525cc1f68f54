"""Where the sweep's Horovod runs go: this machine, a list of hosts, or a hostfile.

    python scripts/sweep.py --np 8 --hosts node1:4,node2:4 --network-interface eth1 ...
    python scripts/sweep.py --np 8 --hostfile hosts.txt ...     # one `HOST slots=N` per line

Each run is then `horovodrun -np N -H ... [--network-interface IF] [--gloo-timeout-seconds S]`,
which starts every host's ranks over ssh, exactly as on a cluster (or on `python -m prsgd.lab`,
whose nodes are network namespaces with an sshd each). Before the first run the driver logs in
to every remote host once, so a host without a working sshd stops the sweep with its name.
"""
from __future__ import annotations

import re
import shlex
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
LOCAL = ("localhost", "127.0.0.1")


class HostsError(ValueError):
    """Bad --hosts/--hostfile or an unreachable host; the message names it."""


def add_arguments(parser) -> None:
    g = parser.add_argument_group("hosts (horovodrun over ssh: a cluster, or python -m prsgd.lab)")
    g.add_argument("--hosts", default=None, metavar="HOST:SLOTS,...",
                   help="horovodrun -H: e.g. node1:4,node2:4")
    g.add_argument("--hostfile", default=None, help="horovodrun --hostfile: `HOST slots=N` lines")
    g.add_argument("--network-interface", default=None,
                   help="horovodrun --network-interface: the interface every host and the "
                        "launcher have under this name (the lab's: labnet)")
    g.add_argument("--gloo-timeout-seconds", type=int, default=None,
                   help="horovodrun --gloo-timeout-seconds: a collective waiting longer on a dead "
                        "peer or link fails the run")
    g.add_argument("--horovodrun-args", default="",
                   help="further horovodrun flags as one string: --horovodrun-args='--disable-cache'")


def parse_hosts(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        host, sep, slots = item.strip().partition(":")
        if not HOST.match(host) or (sep and not slots.isdigit()) or (sep and int(slots) < 1):
            raise HostsError(f"--hosts: expected HOST:SLOTS,... with SLOTS >= 1 (got {text!r})")
        out.append((host, int(slots) if sep else 1))
    if len({h for h, _ in out}) != len(out):
        raise HostsError(f"--hosts: each host once (got {text!r})")
    return out


def parse_hostfile(path: str) -> list[tuple[str, int]]:
    p = Path(path)
    if not p.is_file():
        raise HostsError(f"--hostfile: {path} is not a file")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        words = line.split("#")[0].split()
        if not words:
            continue
        m = re.fullmatch(r"slots=(\d+)", words[1]) if len(words) == 2 else None
        if not HOST.match(words[0]) or len(words) > 2 or (len(words) == 2 and not m):
            raise HostsError(f"--hostfile: {path} line {n}: expected `HOST slots=N` (got {line!r})")
        out.append((words[0], int(m[1]) if m else 1))
    if not out:
        raise HostsError(f"--hostfile: {path} names no host")
    return out


def launch_from_args(args) -> dict:
    """The launch settings the manifest records ({} for a plain local horovodrun)."""
    if args.hosts and args.hostfile:
        raise HostsError("--hosts and --hostfile exclude each other")
    launch = {}
    if args.hosts:
        parse_hosts(args.hosts)
        launch["hosts"] = args.hosts
    if args.hostfile:
        parse_hostfile(args.hostfile)
        launch["hostfile"] = str(Path(args.hostfile).resolve())
    if args.network_interface:
        launch["network_interface"] = args.network_interface
    if args.gloo_timeout_seconds is not None:
        if args.gloo_timeout_seconds < 1:
            raise HostsError("--gloo-timeout-seconds: must be >= 1 "
                             f"(got {args.gloo_timeout_seconds})")
        launch["gloo_timeout_seconds"] = args.gloo_timeout_seconds
    if args.horovodrun_args:
        launch["horovodrun_args"] = shlex.split(args.horovodrun_args)
    return launch


def slots(launch: dict) -> list[tuple[str, int]]:
    if "hosts" in launch:
        return parse_hosts(launch["hosts"])
    if "hostfile" in launch:
        return parse_hostfile(launch["hostfile"])
    return []


def horovodrun_args(launch: dict) -> list[str]:
    out = []
    if "hosts" in launch:
        out += ["-H", launch["hosts"]]
    if "hostfile" in launch:
        out += ["--hostfile", launch["hostfile"]]
    if "network_interface" in launch:
        out += ["--network-interface", launch["network_interface"]]
    if "gloo_timeout_seconds" in launch:
        out += ["--gloo-timeout-seconds", str(launch["gloo_timeout_seconds"])]
    return out + list(launch.get("horovodrun_args", []))


def is_local(host: str) -> bool:
    return host in LOCAL or host == socket.gethostname()


def ssh_error(host: str, timeout: float = 15) -> str | None:
    """None when `ssh HOST true` works as horovodrun will run it (no password prompt), else
    ssh's own last line."""
    try:
        proc = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", host,
                               "true"], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout:g} s"
    except FileNotFoundError:
        return "no ssh client on this machine"
    if proc.returncode == 0:
        return None
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"ssh exit {proc.returncode}"


def check(launch: dict, np: int, backend: str) -> None:
    """Refuse a launch that cannot work before any run starts: hosts with the packed backend,
    more ranks than slots, a remote host that ssh cannot log in to."""
    hosts = slots(launch)
    if not hosts:
        return
    if backend != "horovod":
        raise HostsError("--hosts/--hostfile: only the horovod backend runs on several hosts")
    total = sum(n for _, n in hosts)
    if np > total:
        raise HostsError(f"--np {np} is more than the {total} slots of "
                         f"{', '.join(f'{h}:{n}' for h, n in hosts)}")
    remote = [h for h, _ in hosts if not is_local(h)]
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(remote)))) as pool:
        errors = dict(zip(remote, pool.map(ssh_error, remote)))
    bad = {h: e for h, e in errors.items() if e}
    if bad:
        raise HostsError("cannot log in over ssh to " + "; ".join(
            f"{h} ({e})" for h, e in bad.items()) + ". horovodrun starts each host's ranks over "
            "ssh: start sshd there (on the lab: python -m prsgd.lab sshd HOST start) or leave "
            "the host out")
