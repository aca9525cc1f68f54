r"""A cluster on one machine: K network namespaces ("nodes") on a bridge, shaped links, sshds.

    python -m prsgd.lab up --nodes 2 --slots 1 --cpus-per-node 1 --rate 50mbit   # as root
    python -m prsgd.lab exec -- horovodrun -np 2 -H lab-n1:1,lab-n2:1 --gloo \
        --network-interface labnet python -m prsgd.train ...
    python -m prsgd.lab status | shape --rate 200mbit | link lab-n2 down | down

Layout (lab name `lab`; every name below is derived from it, so several labs can coexist):
- node i: namespace `prsgd-lab-n<i>`, hostname `lab-n<i>` (its sshd runs under `unshare --uts`),
  interface `labnet` with 198.18.0.<10+i>/24, its own CPUs (`taskset` on the sshd; the ranks it
  starts inherit them), `/etc/netns/<ns>/hosts` naming every lab host.
- the launcher: namespace `prsgd-lab-launch`, interface `labnet` with 198.18.0.1, unshaped.
  horovodrun runs here (`lab exec`): its interface has the nodes' name (Horovod looks the
  `--network-interface` up on the launcher too), its /etc/hosts knows the nodes, and its
  /etc/ssh (bind-mounted by `ip netns exec` from /etc/netns/<ns>/ssh) holds the lab's ssh client
  config: the lab key, no host-key checking, keepalives. Nothing outside the lab is reachable
  from it (no route, no other interface), and the root namespace gets no lab address.
- links: a veth pair per namespace, host end `lab<h><i>` on the bridge `labbr`; each node's link
  is shaped with `tc tbf` on BOTH ends (the node's egress and the bridge's egress towards it).
  There is no delay emulation: this kernel has no `netem`, so links have the latency of veth
  (tens of microseconds), not of a real network.
State (keys, configs, logs, lab.json) lives in /run/prsgd-lab/<name>/ (PRSGD_LAB_DIR overrides).
Slurm on the lab (`up --slurm`, `slurm [--stop]`): prsgd.lab.slurm.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from prsgd.lab import slurm as labslurm
from prsgd.lab.network import (IFACE, Lab, LabError, add_namespace, cpu_lists, lab_links,
                               lab_namespaces, set_link, sh, shape, state_root,
                               unavailable_reason)
from prsgd.lab.network import down as net_down
from prsgd.lab.ssh import (ensure_ssh, is_sshd, launcher_prefix, ssh_check, start_sshd, stop_sshd,
                     wait_ssh, write_client_config, write_ssh_files)

__all__ = ["Lab", "LabError", "up", "down", "shape", "set_link", "start_sshd", "stop_sshd",
           "launcher_prefix", "unavailable_reason", "state_root", "lab_namespaces", "lab_links",
           "status", "main"]


def up(lab: Lab, install: bool = True, wait_s: float = 30.0) -> Lab:
    """Build the lab; on any failure remove what was made and raise."""
    lab.validate()
    reason = unavailable_reason()
    if reason:
        raise LabError(reason)
    if Lab.load(lab.name) is not None or lab_namespaces(lab.name) or lab_links(lab.name):
        raise LabError(f"lab {lab.name!r} exists already; `python -m prsgd.lab down --name "
                       f"{lab.name}` first, or choose another --name")
    ensure_ssh(install)
    lab.cpus = cpu_lists(lab)
    lab.status, lab.created = "building", time.strftime("%Y-%m-%dT%H:%M:%S%z")
    lab.save()      # first, so that `down` finds what a killed `up` left
    try:
        write_ssh_files(lab)
        sh("ip", "link", "add", lab.bridge, "type", "bridge")
        sh("ip", "link", "set", lab.bridge, "up")
        for host in [lab.launcher, *lab.hosts]:
            add_namespace(lab, host)
        write_client_config(lab)
        shape(lab, lab.rate, lab.burst)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege-separation dir
        for host in lab.hosts:
            start_sshd(lab, host)
        for host in lab.hosts:
            wait_ssh(lab, host, wait_s)
        (lab.dir / "hostfile").write_text("".join(f"{h} slots={lab.slots}\n" for h in lab.hosts))
        lab.status = "up"
        lab.save()
    except BaseException:
        down(lab.name)
        raise
    return lab


def down(name: str) -> list[str]:
    """Remove lab `name`: its Slurm daemons (labslurm.stop), then everything `up` made."""
    lab = Lab.load(name)
    removed = labslurm.stop(lab) if lab is not None else []
    return removed + net_down(name)


def status(lab: Lab) -> tuple[bool, list[str]]:
    """(healthy, report lines): namespaces, links, shaping, each node's sshd and an ssh login."""
    ok, lines = True, [f"lab {lab.name}: {lab.status}, {lab.nodes} node(s) x {lab.slots} slot(s), "
                       f"link {lab.rate or 'unshaped'} (tbf burst {lab.burst}; no delay "
                       f"emulation), interface {IFACE}, launcher {lab.launcher} "
                       f"{lab.address(lab.launcher)}"]
    spaces = set(lab_namespaces(lab.name))
    for host in lab.hosts:
        ns, veth = lab.ns(host), lab.veth(host)
        link = sh("ip", "-o", "link", "show", veth, check=False).stdout
        state = "up" if ",UP" in link or "<UP" in link else ("down" if link else "missing")
        qdisc = sh("tc", "qdisc", "show", "dev", veth, check=False).stdout.split()
        shaped = " ".join(qdisc[qdisc.index("rate"):qdisc.index("rate") + 2]) \
            if "rate" in qdisc else "unshaped"
        pid = lab.sshd_pids.get(host)
        sshd = f"sshd {pid}" if pid and is_sshd(pid) else "no sshd"
        login = "ssh ok" if ns in spaces and ssh_check(lab, host).returncode == 0 else "no ssh"
        healthy = ns in spaces and state == "up" and login == "ssh ok"
        ok &= healthy
        cpus = ",".join(map(str, lab.cpus[lab.node_index(host) - 1])) if lab.cpus else "?"
        lines.append(f"  {host:<12} {lab.address(host):<15} cpus {cpus:<6} link {state:<7} "
                     f"{shaped:<16} {sshd:<12} {login}")
    return ok, lines


# --- command line ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m prsgd.lab", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default="lab", help="the lab's name (prefix of every name)")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", parents=[common], help="build the lab")
    u.add_argument("--nodes", type=int, default=2)
    u.add_argument("--slots", type=int, default=1, help="ranks per node (hostfile slots)")
    u.add_argument("--cpus-per-node", type=int, default=1)
    u.add_argument("--rate", default="50mbit", help="tc rate of each node link, or none")
    u.add_argument("--burst", default="64kb", help="tbf burst (tc size)")
    u.add_argument("--subnet", default="198.18.0.0/24", help="inside 198.18.0.0/15")
    u.add_argument("--no-install", action="store_true", help="do not apt-get missing packages")
    u.add_argument("--slurm", action="store_true", help="also start Slurm (see `slurm`)")
    sl = sub.add_parser("slurm", parents=[common], help="start Slurm on a lab that is up: munged, "
                        "slurmctld on the launcher, a slurmd per node (prsgd.lab.slurm)")
    sl.add_argument("--stop", action="store_true", help="stop Slurm, keep the lab")
    sl.add_argument("--no-install", action="store_true", help="do not apt-get slurm-wlm munge")
    sub.add_parser("down", parents=[common], help="remove everything `up` made")
    sub.add_parser("status", parents=[common], help="what exists; exit 1 unless all is well")
    sub.add_parser("hosts", parents=[common], help="print horovodrun's -H list")
    s = sub.add_parser("shape", parents=[common], help="change the node links' rate")
    s.add_argument("--rate", required=True, help="tc rate, or none")
    s.add_argument("--burst", default=None)
    lk = sub.add_parser("link", parents=[common], help="cut or restore a node's link")
    lk.add_argument("host")
    lk.add_argument("state", choices=("up", "down"))
    sd = sub.add_parser("sshd", parents=[common], help="stop or start a node's sshd")
    sd.add_argument("host")
    sd.add_argument("action", choices=("start", "stop"))
    e = sub.add_parser("exec", parents=[common], help="run a command in the launcher namespace")
    e.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("deps", help="install what the lab needs (openssh-server, slurm-wlm, munge, "
                   "libpmix2) when missing")
    return p


def _rate(text: str | None) -> str | None:
    """A tc rate (e.g. 50mbit), or None for `none`: an unshaped lab is asked for by name. A rate
    of zero used to build an unshaped lab without a word (issue 21 §5)."""
    if text is None or text.lower() == "none":
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", text.strip())
    if not m:
        raise LabError(f"--rate: {text!r} is not a tc rate (e.g. 50mbit, 1gbit) or none")
    if float(m.group(1)) <= 0:
        raise LabError(f"--rate: {text!r} is no rate at all; say --rate none for unshaped links")
    return text


def _existing(name: str) -> Lab:
    lab = Lab.load(name)
    if lab is None:
        raise LabError(f"no lab named {name!r} (python -m prsgd.lab up --name {name})")
    return lab


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "deps":
            ensure_ssh(install=True)
            labslurm.ensure_slurm(install=True)
            return 0
        if args.cmd == "up":
            lab = up(Lab(args.name, args.nodes, args.slots, args.cpus_per_node, _rate(args.rate),
                         args.burst, args.subnet), install=not args.no_install)
            if args.slurm:
                try:
                    labslurm.up(lab, install=not args.no_install)
                except BaseException:
                    down(lab.name)
                    raise
            if len({c for cpus in lab.cpus for c in cpus}) < lab.nodes * lab.cpus_per_node:
                print(f"lab: warning: {lab.nodes} nodes x {lab.cpus_per_node} CPUs exceed this "
                      "machine's CPUs; nodes share CPUs", file=sys.stderr)
            print("\n".join(status(lab)[1]))
            if args.slurm:
                print("\n".join(labslurm.status(lab)[1]))
            print(f"run: python -m prsgd.lab exec --name {lab.name} -- horovodrun -np "
                  f"{lab.nodes * lab.slots} -H {lab.host_list()} --gloo --network-interface "
                  f"{IFACE} python ...")
            return 0
        if args.cmd == "down":
            removed = down(args.name)
            print(f"lab {args.name}: " + ("removed " + ", ".join(removed) if removed
                                           else "nothing to remove"))
            return 0
        lab = _existing(args.name)
        if args.cmd == "status":
            ok, lines = status(lab)
            sok, slines = labslurm.status(lab)
            print("\n".join(lines + slines))
            ok &= sok
            return 0 if ok else 1
        if args.cmd == "slurm":
            if args.stop:
                removed = labslurm.stop(lab)
                print(f"lab {lab.name}: " + ("stopped " + ", ".join(removed) if removed
                                             else "no Slurm to stop"))
            else:
                labslurm.up(lab, install=not args.no_install)
                print("\n".join(labslurm.status(lab)[1]))
        elif args.cmd == "hosts":
            print(lab.host_list())
        elif args.cmd == "shape":
            shape(lab, _rate(args.rate), args.burst or lab.burst)
            print(f"lab {lab.name}: node links {lab.rate or 'unshaped'}")
        elif args.cmd == "link":
            set_link(lab, args.host, args.state)
        elif args.cmd == "sshd":
            lab.node_index(args.host)
            if args.action == "stop":
                stop_sshd(lab, args.host)
            else:
                start_sshd(lab, args.host)
                wait_ssh(lab, args.host, 30)
        elif args.cmd == "exec":
            cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
            if not cmd:
                raise LabError("exec: give a command, e.g. exec -- horovodrun ...")
            if labslurm.slurm_dir(lab).exists():   # Slurm's clients find the lab's cluster
                os.environ["SLURM_CONF"] = str(labslurm.conf_path(lab))
            os.execvp("ip", [*launcher_prefix(lab), *cmd])
        return 0
    except LabError as e:
        print(f"prsgd.lab: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
