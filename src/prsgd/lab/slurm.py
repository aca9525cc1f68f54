r"""A Slurm cluster on the lab: munged, slurmctld on the launcher, one slurmd per node.

    python -m prsgd.lab up --name sl --nodes 2 --slots 2 --cpus-per-node 1 --slurm   # as root
    python -m prsgd.lab exec --name sl -- sbatch -N2 --ntasks-per-node 2 job.sbatch
    python -m prsgd.lab exec --name sl -- srun --mpi=pmix -N2 -n4 python -m prsgd.train ...
    python -m prsgd.lab status --name sl          # the lab, then `sinfo`
    python -m prsgd.lab down --name sl            # stops the daemons, then removes the lab

(`lab slurm --name sl` adds Slurm to a lab that is up already; `lab slurm --name sl --stop`
removes it and leaves the lab.) Layout, everything under the lab's state directory `slurm/`:
- munged (Debian's munge) in the root namespace with a lab-only key and its own socket, named in
  slurm.conf (`AuthInfo=socket=...`); a unix socket serves every namespace.
- slurmctld in the launcher namespace under `unshare --uts`, hostname = the launcher's name.
- slurmd of node i in the node's network namespace (`nsenter --net`, not `ip netns exec`: that
  remounts /sys, and slurmd then finds no /sys/fs/cgroup), in its own UTS namespace (hostname
  = node name) and mount namespace: the node's /etc/hosts bound over /etc/hosts (node names
  resolve inside jobs) and a per-node directory bound over /tmp (each node's PMIx server has its
  own /tmp; with one shared /tmp the second fails in pmixp_libpmix_init), and the launcher's ssh
  client config bound over /etc/ssh (a job's horovodrun logs in to the lab's nodes as from the
  launcher, as on a cluster whose nodes trust each other). It runs on the node's
  CPUs (`taskset`), so its jobs' tasks do (TaskPlugin=task/none binds nothing).
  CONSEQUENCE: a job sees its node's private /tmp, so job directories and virtual environments
  must live outside /tmp.
- clients (sbatch, srun, sinfo, scancel) reach slurmctld from the launcher namespace (`lab exec`)
  with SLURM_CONF set to the lab's slurm.conf; sbatch/srun pass it on to the job.
Every daemon runs in the foreground (-D/-F) in its own session; its PID is in slurm.json, and
`stop` kills those PIDs and removes the directory. No cgroups, no accounting database.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from prsgd.lab.network import NETNS_ETC, Lab, LabError, kill_pids, sh

PACKAGES = ("slurm-wlm", "munge", "libpmix2")
DAEMONS = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/sbin/mungekey")
CLIENTS = ("srun", "sbatch", "sinfo", "scontrol", "scancel", "squeue", "nsenter")
PMIX_PLUGIN = "mpi_pmix.so"
KILL_WAIT = 5          # s between a job's SIGTERM and SIGKILL (scancel, time limit, node loss)
SLURMD_TIMEOUT = 10    # s without an answer from a slurmd before slurmctld sets its node DOWN
# s a step credential lives, and so how long a requeued job waits before it starts again
# (slurm.conf(5) AuthInfo cred_expire; 120 by default). The wait keeps a requeued job (same job
# id) clear of what is still on its way for the old instance. A job forced to start at once
# (scontrol update StartTime=now) once had its new tasks on the returned node SIGTERMed (most
# likely by the old instance's kill, queued for that node) while the other node waited in the
# PMIx fence for ever (CI, 2026-12-03).
CRED_EXPIRE = 30


def missing() -> list[str]:
    """What Slurm on the lab needs and this machine lacks (empty: nothing)."""
    out = [t for t in (*DAEMONS, *CLIENTS) if shutil.which(t) is None and not Path(t).exists()]
    if not out and plugin_dir() is None:
        out.append(f"Slurm's PMIx plugin ({PMIX_PLUGIN}; Debian: libpmix2, slurm-wlm)")
    return out


def plugin_dir() -> Path | None:
    for d in (Path("/usr/lib/x86_64-linux-gnu/slurm-wlm"), Path("/usr/lib/aarch64-linux-gnu/"
              "slurm-wlm"), Path("/usr/lib64/slurm"), Path("/usr/lib/slurm")):
        if (d / PMIX_PLUGIN).exists():
            return d
    return None


def ensure_slurm(install: bool = True) -> None:
    """Debian's slurm-wlm, munge and libpmix2; installed (apt-get) when missing and allowed.
    libpmix2 must be there before slurmd starts, or `srun --mpi=pmix` has no plugin."""
    lacking = missing()
    if not lacking:
        return
    what = " ".join(PACKAGES)
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise LabError(f"Slurm missing ({', '.join(lacking)}): apt-get install {what}")
    print(f"lab: installing {what} ({', '.join(lacking)} missing)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for args in (["apt-get", "update"],
                 ["apt-get", "install", "-y", "-o", "DPkg::Lock::Timeout=300", *PACKAGES]):
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        if proc.returncode != 0 and args[1] == "install":
            raise LabError(f"apt-get install {what} failed: {proc.stderr.strip()[-400:]}")
    if missing():
        raise LabError(f"Slurm still missing after apt-get install {what}: {', '.join(missing())}")


# --- state --------------------------------------------------------------------------------------
def slurm_dir(lab: Lab) -> Path:
    return lab.dir / "slurm"


def conf_path(lab: Lab) -> Path:
    return slurm_dir(lab) / "slurm.conf"


def load_state(lab: Lab) -> dict:
    try:
        return json.loads((slurm_dir(lab) / "slurm.json").read_text())
    except (OSError, ValueError):
        return {}


def save_state(lab: Lab, state: dict) -> None:
    tmp = slurm_dir(lab) / "slurm.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, slurm_dir(lab) / "slurm.json")


def env(lab: Lab, **extra) -> dict:
    """The environment a Slurm client of this lab needs (SLURM_CONF), over os.environ."""
    e = dict(os.environ, SLURM_CONF=str(conf_path(lab)))
    e.update(extra)
    return e


def client(lab: Lab, *cmd, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a Slurm client command (sinfo, scontrol, ...) in the launcher namespace."""
    proc = subprocess.run(["ip", "netns", "exec", lab.ns(lab.launcher), *map(str, cmd)],
                          env=env(lab), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"`{' '.join(map(str, cmd))}` failed: "
                       f"{(proc.stderr or proc.stdout).strip() or 'exit ' + str(proc.returncode)}")
    return proc


def alive(pid: int | None, comm: str) -> bool:
    try:
        return bool(pid) and Path(f"/proc/{pid}/comm").read_text().strip() == comm
    except OSError:
        return False


# --- configuration ------------------------------------------------------------------------------
def write_conf(lab: Lab) -> None:
    d = slurm_dir(lab)
    cpus = lab.slots        # a node offers one CPU per slot (config_overrides: not the hardware)
    nodes = "\n".join(f"NodeName={h} NodeAddr={lab.address(h)} CPUs={cpus} State=UNKNOWN"
                      for h in lab.hosts)
    conf_path(lab).write_text(f"""\
# prsgd lab {lab.name}: a Slurm cluster of {lab.nodes} network-namespace nodes (prsgd.lab.slurm)
ClusterName=prsgd{lab.name}
SlurmctldHost={lab.launcher}({lab.address(lab.launcher)})
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d / 'munge.socket'},cred_expire={CRED_EXPIRE}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d / 'state'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmctldLogFile={d / 'slurmctld.log'}
SlurmdPidFile={d / 'slurmd-%n.pid'}
SlurmdLogFile={d / 'slurmd-%n.log'}
SlurmdSpoolDir={d / 'spool-%n'}
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
KillWait={KILL_WAIT}
SlurmdTimeout={SLURMD_TIMEOUT}
InactiveLimit=0
MinJobAge=300
EnforcePartLimits=ALL
MailProg=/bin/true
PluginDir={plugin_dir()}
{nodes}
PartitionName=lab Nodes={','.join(lab.hosts)} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
""")


# --- daemons ------------------------------------------------------------------------------------
def _spawn(lab: Lab, argv: list[str], log: str) -> int:
    with open(slurm_dir(lab) / log, "ab") as f:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env(lab))
    return proc.pid


def start_munged(lab: Lab, state: dict) -> None:
    d = slurm_dir(lab)
    if not (d / "munge.key").exists():
        sh("mungekey", "--create", "--keyfile", d / "munge.key")
        os.chmod(d / "munge.key", 0o600)
    state["munged"] = _spawn(lab, [
        "munged", "--foreground", "--force", "--key-file", str(d / "munge.key"),
        "--socket", str(d / "munge.socket"), "--pid-file", str(d / "munged.pid"),
        "--seed-file", str(d / "munged.seed"), "--log-file", str(d / "munged.log")],
        "munged.out")
    save_state(lab, state)
    _wait(lambda: (d / "munge.socket").exists(), 10, "munged's socket", d / "munged.log")


def start_slurmctld(lab: Lab, state: dict) -> None:
    script = 'hostname "$1" && exec slurmctld -D -c -f "$2"'
    state["slurmctld"] = _spawn(lab, [
        "ip", "netns", "exec", lab.ns(lab.launcher), "unshare", "--uts", "--", "sh", "-c", script,
        "sh", lab.launcher, str(conf_path(lab))], "slurmctld.out")
    save_state(lab, state)


def start_slurmd(lab: Lab, host: str, state: dict) -> None:
    """slurmd of `host`: its network namespace, hostname, /etc/hosts, /tmp and CPUs."""
    ns = lab.ns(host)
    tmp = slurm_dir(lab) / f"tmp-{host}"
    tmp.mkdir(mode=0o1777, exist_ok=True)
    os.chmod(tmp, 0o1777)
    cpus = ",".join(map(str, lab.cpus[lab.node_index(host) - 1]))
    script = ('mount --bind "$1" /etc/hosts && mount --bind "$2" /tmp && '
              'mount --bind "$6" /etc/ssh && hostname "$3" && '
              'exec taskset -c "$4" slurmd -D -N "$3" -f "$5"')
    pids = state.setdefault("slurmd", {})
    pids[host] = _spawn(lab, [
        "nsenter", f"--net=/var/run/netns/{ns}", "unshare", "--uts", "--mount", "--propagation",
        "private", "--", "sh", "-c", script, "sh", str(NETNS_ETC / ns / "hosts"), str(tmp), host,
        cpus, str(conf_path(lab)), str(NETNS_ETC / lab.ns(lab.launcher) / "ssh")],
        f"slurmd-{host}.out")
    save_state(lab, state)


def _wait(cond, wait_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.time() + wait_s
    while not cond():
        if time.time() > deadline:
            tail = log.read_text().strip().splitlines()[-5:] if log and log.exists() else []
            raise LabError(f"no {what} after {wait_s:g} s" + (f"; {log.name}: "
                           + " | ".join(tail) if tail else ""))
        time.sleep(0.3)


def node_states(lab: Lab) -> dict[str, str]:
    """{node: Slurm state} from sinfo ({} when slurmctld does not answer)."""
    proc = client(lab, "sinfo", "-h", "-N", "-o", "%N %T", check=False, timeout=20)
    if proc.returncode != 0:
        return {}
    return dict(line.split()[:2] for line in proc.stdout.splitlines() if len(line.split()) >= 2)


def healthy(lab: Lab) -> bool:
    st = load_state(lab)
    if not (alive(st.get("munged"), "munged") and alive(st.get("slurmctld"), "slurmctld")):
        return False
    if not all(alive(st.get("slurmd", {}).get(h), "slurmd") for h in lab.hosts):
        return False
    states = node_states(lab)
    return all(states.get(h, "").rstrip("*") in ("idle", "mixed", "allocated") for h in lab.hosts)


def up(lab: Lab, install: bool = True, wait_s: float = 60.0) -> Lab:
    """Slurm on lab `lab` (which must be up). Idempotent: a healthy cluster is left as it is; a
    partial one is stopped and rebuilt. On failure, what was started is stopped and LabError
    raised (the lab itself stays)."""
    if lab.status != "up":
        raise LabError(f"lab {lab.name!r} is {lab.status}, not up")
    if slurm_dir(lab).exists():
        if healthy(lab):
            return lab
        st = load_state(lab)
        if st.get("status") == "up" and alive(st.get("munged"), "munged") \
                and alive(st.get("slurmctld"), "slurmctld"):
            restart_nodes(lab, st, wait_s)     # a node's slurmd lost: start it again
            return lab
        stop(lab)
    ensure_slurm(install)
    slurm_dir(lab).mkdir(mode=0o755)
    (slurm_dir(lab) / "state").mkdir()
    state: dict = {"status": "building"}
    save_state(lab, state)
    try:
        write_conf(lab)
        start_munged(lab, state)
        start_slurmctld(lab, state)
        _wait(lambda: client(lab, "scontrol", "ping", check=False, timeout=10).returncode == 0,
              wait_s, "answer from slurmctld", slurm_dir(lab) / "slurmctld.log")
        for host in lab.hosts:
            start_slurmd(lab, host, state)
        for host in lab.hosts:
            _wait(lambda: node_states(lab).get(host, "").rstrip("*") == "idle", wait_s,
                  f"idle node {host} in sinfo", slurm_dir(lab) / f"slurmd-{host}.log")
        state["status"] = "up"
        save_state(lab, state)
    except BaseException:
        stop(lab)
        raise
    return lab


def restart_nodes(lab: Lab, state: dict, wait_s: float = 60.0) -> list[str]:
    """Start the slurmd of every node that has none (a lost node back); wait until each is
    usable again (ReturnToService=2 returns a node set DOWN for not responding)."""
    lost = [h for h in lab.hosts if not alive(state.get("slurmd", {}).get(h), "slurmd")]
    for host in lost:
        # As after a reboot: no /tmp and spool left by the lost node's steps (a stale PMIx
        # socket there fails the requeued job's step: "Cannot bind() UNIX socket").
        for d in (slurm_dir(lab) / f"spool-{host}", slurm_dir(lab) / f"tmp-{host}"):
            for entry in d.iterdir() if d.is_dir() else ():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        start_slurmd(lab, host, state)
    for host in lost:
        _wait(lambda: node_states(lab).get(host, "").rstrip("*") == "idle", wait_s,
              f"idle node {host} in sinfo", slurm_dir(lab) / f"slurmd-{host}.log")
    return lost


def stop(lab: Lab) -> list[str]:
    """Stop lab `lab`'s Slurm: its jobs' processes (with their slurmd's namespaces), the daemons
    by PID, then its directory (state, spool, logs, the nodes' /tmp). Returns what was removed."""
    d = slurm_dir(lab)
    if not d.exists():
        return []
    st = load_state(lab)
    removed = []
    # Jobs first (every slurmstepd and task on the nodes), then the daemons, munged last.
    kill_pids([p for host in lab.hosts for p in job_pids(lab, host)])
    # The slurmds and slurmctld together (each takes seconds to exit), munged after them.
    for group in ([*[("slurmd " + h, p) for h, p in st.get("slurmd", {}).items()],
                   ("slurmctld", st.get("slurmctld"))], [("munged", st.get("munged"))]):
        live = [(name, pid) for name, pid in group if alive(pid, name.split()[0])]
        kill_pids([pid for _, pid in live])
        removed += [f"{name} {pid}" for name, pid in live]
    shutil.rmtree(d, ignore_errors=True)
    removed.append(f"slurm state {d}")
    return removed


def job_pids(lab: Lab, host: str) -> list[int]:
    """The processes of Slurm jobs on node `host`: its slurmstepds and their tasks."""
    pids = [int(p) for p in sh("ip", "netns", "pids", lab.ns(host), check=False).stdout.split()]
    return [p for p in pids if _is_slurm_job(p)]


def _is_slurm_job(pid: int) -> bool:
    """A slurmstepd, or a process with a Slurm job's environment."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() == "slurmstepd":
            return True
        return b"SLURM_JOB_ID=" in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def status(lab: Lab) -> tuple[bool, list[str]]:
    """(healthy, lines): the daemons and `sinfo`."""
    if not slurm_dir(lab).exists():
        return True, ["  slurm: not started (python -m prsgd.lab slurm --name " + lab.name + ")"]
    st = load_state(lab)
    ok = healthy(lab)
    daemons = [f"munged {st.get('munged')}" if alive(st.get("munged"), "munged") else "no munged",
               f"slurmctld {st.get('slurmctld')}" if alive(st.get("slurmctld"), "slurmctld")
               else "no slurmctld"]
    daemons += [f"slurmd {h} {p}" if alive(p, "slurmd") else f"no slurmd {h}"
                for h, p in ((h, st.get("slurmd", {}).get(h)) for h in lab.hosts)]
    lines = [f"  slurm: {'up' if ok else 'NOT healthy'} ({', '.join(daemons)}); "
             f"SLURM_CONF={conf_path(lab)}"]
    proc = client(lab, "sinfo", check=False, timeout=20)
    lines += ["  " + line for line in (proc.stdout or proc.stderr).rstrip().splitlines()]
    return ok, lines
