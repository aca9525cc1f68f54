"""The lab's ssh: Debian's openssh-server, a lab-only key pair, one sshd per node (in the node's
namespace, under its own hostname and CPUs) and the launcher's client config."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from prsgd.lab.network import NETNS_ETC, Lab, LabError, kill_pids, sh

def ensure_ssh(install: bool = True) -> None:
    """Debian's openssh-server (sshd) and client (ssh, ssh-keygen); installed when missing."""
    missing = [t for t in ("/usr/sbin/sshd", "ssh", "ssh-keygen")
               if shutil.which(t) is None and not Path(t).exists()]
    if not missing:
        return
    if not install:
        raise LabError(f"{', '.join(missing)} missing: apt-get install openssh-server")
    print(f"lab: installing openssh-server ({', '.join(missing)} missing)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for args in (["apt-get", "update"], ["apt-get", "install", "-y", "-o",
                                         "DPkg::Lock::Timeout=300", "openssh-server"]):
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        if proc.returncode != 0 and args[1] == "install":
            raise LabError(f"apt-get install openssh-server failed: {proc.stderr.strip()[-400:]}")


def write_ssh_files(lab: Lab) -> None:
    """A lab-only client key (accepted only from the lab's subnet) and one host key."""
    d = lab.dir
    for key in ("id_ed25519", "ssh_host_ed25519_key"):
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"prsgd-lab-{lab.name}",
           "-f", d / key)
    pub = (d / "id_ed25519.pub").read_text().strip()
    (d / "authorized_keys").write_text(f'from="{lab.subnet}" {pub}\n')
    for host in lab.hosts:
        (d / f"{host}.sshd_config").write_text(f"""\
# prsgd lab {lab.name}: the sshd of node {host} (started in its namespace by prsgd.lab)
ListenAddress {lab.address(host)}
Port 22
HostKey {d / 'ssh_host_ed25519_key'}
AuthorizedKeysFile {d / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PidFile {d / (host + '.sshd.pid')}
# horovodrun opens one session per slot at once
MaxStartups 100
MaxSessions 100
# a launcher cut off by a dead link: its sessions (and their ranks) end within ~15 s
ClientAliveInterval 5
ClientAliveCountMax 3
""")


def write_client_config(lab: Lab) -> None:
    """The launcher namespace's /etc/ssh: plain `ssh lab-n1` (as horovodrun runs it) logs in
    with the lab key; host keys are not checked, for the lab's hosts only."""
    d = NETNS_ETC / lab.ns(lab.launcher) / "ssh"
    d.mkdir(parents=True, exist_ok=True)
    names = " ".join(lab.hosts + [lab.address(h) for h in lab.hosts])
    (d / "ssh_config").write_text(f"""\
# prsgd lab {lab.name}: ssh client config of the launcher namespace {lab.ns(lab.launcher)}
Host {names}
    User root
    IdentityFile {lab.dir / 'id_ed25519'}
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
    BatchMode yes
    ConnectTimeout 5
    ServerAliveInterval 5
    ServerAliveCountMax 3
""")


def sshd_binary() -> str:
    return shutil.which("sshd") or "/usr/sbin/sshd"


def start_sshd(lab: Lab, host: str) -> None:
    """The node's sshd: in its namespace, its own UTS namespace (hostname = node name) and on
    its own CPUs; every session, so every rank, inherits all three. Each stage execs the next,
    so the process started here is the sshd itself."""
    cpus = ",".join(map(str, lab.cpus[lab.node_index(host) - 1]))
    script = 'hostname "$1" && exec taskset -c "$2" "$3" -D -e -f "$4"'
    with open(lab.dir / f"{host}.sshd.log", "ab") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns(host), "unshare", "--uts", "--", "sh", "-c", script,
             "sh", host, cpus, sshd_binary(), str(lab.dir / f"{host}.sshd_config")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    lab.sshd_pids[host] = proc.pid
    lab.save()


def launcher_prefix(lab: Lab) -> list[str]:
    """The command prefix that runs a command in the lab's launcher namespace."""
    return ["ip", "netns", "exec", lab.ns(lab.launcher)]


def ssh_check(lab: Lab, host: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run([*launcher_prefix(lab), "ssh", host, "true"], capture_output=True,
                          text=True, timeout=timeout)


def wait_ssh(lab: Lab, host: str, wait_s: float) -> None:
    deadline = time.time() + wait_s
    while True:
        proc = ssh_check(lab, host)
        if proc.returncode == 0:
            return
        if time.time() > deadline:
            log = (lab.dir / f"{host}.sshd.log")
            tail = log.read_text().strip().splitlines()[-5:] if log.exists() else []
            raise LabError(f"{host}: no ssh login after {wait_s:g} s ({proc.stderr.strip()}); "
                           f"sshd log: {' | '.join(tail)}")
        time.sleep(0.3)


def stop_sshd(lab: Lab, host: str) -> None:
    pid = lab.sshd_pids.pop(host, None)
    if pid and is_sshd(pid):
        kill_pids([pid])
    lab.save()


def is_sshd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "sshd"
    except OSError:
        return False
