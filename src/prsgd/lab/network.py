"""The lab's network: namespaces on a bridge, veth links shaped with tc tbf, and their removal.

The spec (`Lab`) names everything from the lab's name, so `down` can find what a killed `up` left
and several labs can coexist; `prsgd.lab` builds and drives it (see its docstring).
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")   # RFC 2544: reserved for benchmarks
IFACE = "labnet"
NETNS_ETC = Path("/etc/netns")
RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")
SIZE = re.compile(r"^\d+(b|k|kb|m|mb|kbit|mbit)?$")
NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")
TBF_LATENCY = "50ms"   # the longest a packet may wait in the shaper's queue before a drop


class LabError(RuntimeError):
    """A lab operation that cannot go on; the message says why and what to do."""


def state_root() -> Path:
    return Path(os.environ.get("PRSGD_LAB_DIR", "/run/prsgd-lab"))


@dataclass


class Lab:
    name: str = "lab"
    nodes: int = 2
    slots: int = 1                 # ranks per node (the hostfile's slots)
    cpus_per_node: int = 1
    rate: str | None = "50mbit"    # tc rate of every node link; None: unshaped
    burst: str = "64kb"
    subnet: str = "198.18.0.0/24"
    cpus: list = field(default_factory=list)      # node i's CPU list, set by `up`
    sshd_pids: dict = field(default_factory=dict)
    status: str = "new"
    created: str = ""

    # --- derived names -------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        return state_root() / self.name

    def host(self, i: int) -> str:          # node i = 1..K
        return f"{self.name}-n{i}"

    @property
    def hosts(self) -> list[str]:
        return [self.host(i) for i in range(1, self.nodes + 1)]

    @property
    def launcher(self) -> str:
        return f"{self.name}-launch"

    @staticmethod
    def ns(host: str) -> str:
        return f"prsgd-{host}"

    def veth(self, host: str) -> str:       # host end, in the root namespace
        return f"{self.name}h" + ("l" if host == self.launcher else host.rsplit("-n", 1)[1])

    @property
    def bridge(self) -> str:
        return f"{self.name}br"

    def address(self, host: str) -> str:
        net = ipaddress.ip_network(self.subnet)
        k = 1 if host == self.launcher else 10 + int(host.rsplit("-n", 1)[1])
        return str(net.network_address + k)

    def node_index(self, host: str) -> int:
        if host not in self.hosts:
            raise LabError(f"{host}: not a node of lab {self.name} ({', '.join(self.hosts)})")
        return self.hosts.index(host) + 1

    def host_list(self) -> str:
        """horovodrun's -H argument for every slot of the lab."""
        return ",".join(f"{h}:{self.slots}" for h in self.hosts)

    def validate(self) -> None:
        if not NAME.match(self.name):
            raise LabError("--name: 1-8 characters a-z0-9, starting with a letter "
                           f"(got {self.name!r})")
        if not 1 <= self.nodes <= 200:
            raise LabError(f"--nodes: must be in 1..200 (got {self.nodes})")
        if self.slots < 1 or self.cpus_per_node < 1:
            raise LabError("--slots and --cpus-per-node must be >= 1")
        if self.rate is not None and not RATE.match(self.rate):
            raise LabError("--rate: a tc rate such as 50mbit or 1gbit, or none "
                           f"(got {self.rate!r})")
        if not SIZE.match(self.burst):
            raise LabError(f"--burst: a tc size such as 64kb (got {self.burst!r})")
        try:
            net = ipaddress.ip_network(self.subnet)
        except ValueError as e:
            raise LabError(f"--subnet: {e}") from None
        if not net.subnet_of(LAB_RANGE) or net.num_addresses < 16 + self.nodes:
            raise LabError(f"--subnet: must lie inside {LAB_RANGE} and hold {self.nodes} nodes "
                           f"(got {self.subnet})")

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        d = asdict(self)
        d.update(hosts=self.hosts, launcher=self.launcher, interface=IFACE,
                 addresses={h: self.address(h) for h in [self.launcher, *self.hosts]},
                 rate_bit_s=rate_bits(self.rate), shaping="tbf on both ends of each node link; "
                 "no delay emulation (no netem in this kernel)", latency=TBF_LATENCY)
        tmp = self.dir / "lab.json.tmp"
        tmp.write_text(json.dumps(d, indent=2) + "\n")
        os.replace(tmp, self.dir / "lab.json")

    @classmethod
    def load(cls, name: str) -> "Lab | None":
        path = state_root() / name / "lab.json"
        if not path.exists():
            return None
        d = json.loads(path.read_text())
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


RATE_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9,     # tc: k = 1000
              "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9}       # tc: bps = bytes/s


def rate_bits(rate: str | None) -> float | None:
    """A tc rate in bit/s; None for an unshaped link."""
    if rate is None:
        return None
    m = re.match(r"^(\d+(?:\.\d+)?)([a-z]+)$", rate)
    return float(m[1]) * RATE_UNITS[m[2]]


def sh(*cmd, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(map(str, cmd))}` failed: "
                       f"{(proc.stderr or proc.stdout).strip() or 'exit ' + str(proc.returncode)}")
    return proc


def unavailable_reason() -> str | None:
    """Why the lab cannot be built here (None: it can). Checks what `up` needs before it starts."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, veth pairs, tc); run as root"
    for tool in ("ip", "tc", "unshare", "taskset"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (Debian: iproute2 / util-linux)"
    probe = f"prsgd-probe{os.getpid()}"
    proc = sh("ip", "netns", "add", probe, check=False)
    if proc.returncode != 0:
        return f"cannot create a network namespace here: {proc.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


def cpu_lists(lab: Lab) -> list[list[int]]:
    """Node i's CPUs: consecutive CPUs of this process's affinity, wrapping when the nodes ask
    for more than there are (then nodes share CPUs, and `up` says so)."""
    avail = sorted(os.sched_getaffinity(0))
    c = lab.cpus_per_node
    return [[avail[(i * c + j) % len(avail)] for j in range(c)] for i in range(lab.nodes)]


# --- building and removing ---------------------------------------------------------------------
def _hosts_file(lab: Lab) -> str:
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    lines += [f"{lab.address(h)} {h}" for h in [lab.launcher, *lab.hosts]]
    return "\n".join(lines) + "\n"


def add_namespace(lab: Lab, host: str) -> None:
    ns, veth = lab.ns(host), lab.veth(host)
    prefix = ipaddress.ip_network(lab.subnet).prefixlen
    sh("ip", "netns", "add", ns)
    etc = NETNS_ETC / ns     # `ip netns exec` bind-mounts these over /etc/* for the namespace
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hosts").write_text(_hosts_file(lab))
    sh("ip", "link", "add", veth, "type", "veth", "peer", "name", IFACE, "netns", ns)
    sh("ip", "link", "set", veth, "master", lab.bridge, "up")
    sh("ip", "-n", ns, "addr", "add", f"{lab.address(host)}/{prefix}", "dev", IFACE)
    sh("ip", "-n", ns, "link", "set", IFACE, "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")


def shape(lab: Lab, rate: str | None, burst: str) -> None:
    """tbf at `rate` on both ends of every node link (None: remove the shaping)."""
    lab.rate, lab.burst = rate, burst
    lab.validate()
    for host in lab.hosts:
        for where, dev in (((), lab.veth(host)), (("-n", lab.ns(host)), IFACE)):
            if rate is None:
                sh("tc", *where, "qdisc", "del", "dev", dev, "root", check=False)
            else:
                sh("tc", *where, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
                   "burst", burst, "latency", TBF_LATENCY)
    lab.save()


def set_link(lab: Lab, host: str, state: str) -> None:
    """Cut (down) or restore (up) node `host`'s link at the bridge."""
    lab.node_index(host)
    sh("ip", "link", "set", lab.veth(host), state)
    if state == "up":      # keep the shaping whatever the kernel did with the qdisc
        shape(lab, lab.rate, lab.burst)


def lab_namespaces(name: str) -> list[str]:
    pat = re.compile(rf"^prsgd-{name}-(n\d+|launch)$")
    listed = [line.split()[0] for line in sh("ip", "netns", "list", check=False).stdout.splitlines()
              if line.strip()]
    return [ns for ns in listed if pat.match(ns)]


def lab_links(name: str) -> list[str]:
    pat = re.compile(rf"^{name}(br|h(\d+|l))$")
    out = sh("ip", "-o", "link", "show", check=False).stdout.splitlines()
    names = [line.split(":")[1].strip().split("@")[0] for line in out if ":" in line]
    return [n for n in names if pat.match(n)]


def kill_pids(pids: list[int], grace: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if Path(f"/proc/{p}").exists()]
        if not pids:
            return


def down(name: str) -> list[str]:
    """Remove everything `up` made for lab `name` (also after a failed or killed `up`): the
    processes inside its namespaces (sshd and the ranks it started), the namespaces, their
    /etc/netns entries, the bridge and veths, the state directory. Returns what was removed."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veth pairs, tc); run as root")
    removed = []
    pat = re.compile(rf"^prsgd-{name}-(n\d+|launch)$")
    for ns in lab_namespaces(name):
        pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
        kill_pids([p for p in pids if p != os.getpid()])
        sh("ip", "netns", "del", ns, check=False)
        removed.append(f"namespace {ns}")
    if NETNS_ETC.is_dir():
        for d in NETNS_ETC.iterdir():
            if pat.match(d.name):
                shutil.rmtree(d, ignore_errors=True)
    for link in lab_links(name):
        sh("ip", "link", "del", link, check=False)
        removed.append(f"link {link}")
    if (state_root() / name).exists():
        shutil.rmtree(state_root() / name, ignore_errors=True)
        removed.append(f"state {state_root() / name}")
    for d in (state_root(), NETNS_ETC):      # made by the first lab; gone with the last
        try:
            d.rmdir()
        except OSError:
            pass
    return removed
