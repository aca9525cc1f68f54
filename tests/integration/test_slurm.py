"""Slurm on the lab (issue 20): munged, slurmctld and a slurmd per node (prsgd.lab.slurm), and
every documented Slurm launch path run across 2 lab nodes x 2 ranks: the committed sbatch
scripts (`srun --mpi=pmix` under Horovod's MPI controller; torchrun under srun; the whole sweep as
one job), each against `horovodrun -H` or separate runs in fp64; then what a cluster does to
jobs: `scancel --signal=TERM` and a resubmission that resumes bit-identically, a second job on
the same run directory refused by the run lock.

Needs root, network namespaces, OpenMPI and Horovod built with MPI; the lab installs Slurm
(slurm-wlm, munge, libpmix2) when missing. Elsewhere every test here is skipped with the reason.
Job directories live under /var/tmp: a job sees its node's private /tmp (prsgd.lab.slurm).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, load_ckpt, metric_rows, run_status, subprocess_env
from prsgd.lab import cli as lab_mod
from prsgd.lab import slurm as labslurm

pytestmark = [pytest.mark.horovod, pytest.mark.slow]
SCRIPTS = ROOT / "scripts" / "slurm"
# What a CPU node of the lab must override in the committed (GPU) scripts.
CPU = ["--gpus-per-node=0", "--cpus-per-task=1", "--ntasks-per-node=2", "--time=10"]
# Logistic regression, fp64: 4 workers x 256-sample shards / batch 16 = 16 steps per epoch, a
# round every 5 steps, 20 epochs (~0.25 s each here): the workers' models differ at every
# checkpoint (so each is kept and restored), and most of the run is ahead after epoch 1.
LOGREG = ["--device", "cpu", "--model", "logreg", "--dataset", "synthetic_logreg", "--augment",
          "false", "--train-subset", "1024", "--test-subset", "64", "--batch-size", "16",
          "--lr", "0.5", "--precision", "fp64", "--progress", "false"]
LONG = [*LOGREG, "--interval", "5", "--epochs", "20", "--lr-milestones", "15", "--seed", "11"]
# The sweep's runs: 2 workers, 32 steps per epoch, 3 epochs (no --seed, --interval: prsgd.mpi_sweep
# sets them, from SEED and INTERVALS in the figure-3 script).
SHORT = [*LOGREG, "--epochs", "3", "--lr-milestones", "2"]
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE", "PREEMPTED")   # the job states that end a job
FAULT_BOUND = labslurm.KILL_WAIT + 30   # s from scancel to the job's end (documented bound)
# s from a node's loss to the job's end on the other node: slurmctld notices the silent slurmd
# after SlurmdTimeout (+ its ping interval), cancels the step, KillWait later SIGKILLs the rest.
NODE_LOSS_BOUND = 3 * labslurm.SLURMD_TIMEOUT + labslurm.KILL_WAIT + 30


def reason() -> str | None:
    why = lab_mod.unavailable_reason()
    if why:
        return why
    if shutil.which("mpirun") is None:
        return "mpirun not on PATH (apt-get install openmpi-bin libopenmpi-dev)"
    probe = subprocess.run([sys.executable, "-c", "import horovod.torch as h; print(h.mpi_built())"],
                           capture_output=True, text=True, env=subprocess_env())
    if probe.stdout.strip() != "True":
        return "Horovod built without MPI (rerun scripts/install_horovod.sh with mpicxx on PATH)"
    return None


def lab_cli(*args, check=True, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "prsgd.lab", *args], env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"prsgd.lab {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


class Cluster:
    """The lab with Slurm up, and a job directory outside /tmp."""

    def __init__(self, lab: lab_mod.Lab, jobs: Path):
        self.lab, self.jobs = lab, jobs

    def env(self, **extra) -> dict:
        # Jobs inherit the submitter's environment (sbatch --export=ALL): the lab's slurm.conf,
        # the interpreter, and the one interface the ranks may use.
        return subprocess_env(SLURM_CONF=labslurm.conf_path(self.lab), PY=sys.executable,
                              GLOO_SOCKET_IFNAME=lab_mod.IFACE,
                              OMPI_MCA_btl_tcp_if_include=lab_mod.IFACE,
                              OMPI_MCA_oob_tcp_if_include=lab_mod.IFACE, **extra)

    def popen(self, cmd: list, **extra) -> subprocess.Popen:
        return subprocess.Popen([*lab_mod.launcher_prefix(self.lab), *map(str, cmd)],
                                env=self.env(**extra), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                start_new_session=True)

    def run(self, cmd: list, timeout: float = 300, check: bool = True, **extra) -> str:
        proc = self.popen(cmd, **extra)
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                                 f"{out[-4000:]}")
        return out

    def sbatch(self, script: Path, args: list, opts: list = (), wait: bool = True,
               check: bool = True, timeout: float = 300, **export) -> tuple[str, str]:
        """Submit `script` from the repository root; returns (job id, the job's output) when
        `wait` (the job has ended), else (job id, "")."""
        out = self.jobs / "slurm-%j.out"
        # --export=ALL (sbatch's default) carries `export` to the job: in the environment, as
        # --export=ALL,K=V would (that form cannot carry a value with a comma, INTERVALS=3,5).
        cmd = ["sbatch", "--parsable", f"--output={out}", "--export=ALL", *opts, script, *args]
        text = self.run(cmd, timeout=60, **export)
        jid = re.match(r"\d+", text.strip())[0]
        if not wait:
            return jid, ""
        # Not `sbatch --wait`: it sleeps longer after each poll; here every job that ended
        # between ~10 and 42 s after its submission was reported 42.0-42.5 s after it.
        end = time.monotonic() + timeout
        while (state := self.job_state(jid)) not in (*FINAL, "GONE"):
            assert time.monotonic() < end, f"job {jid} still {state} after {timeout} s"
            time.sleep(0.2)
        out = (self.jobs / f"slurm-{jid}.out").read_text()
        if check and state != "COMPLETED":
            raise AssertionError(f"sbatch {script.name} {' '.join(map(str, args))}: job {jid} "
                                 f"{state}\n--- the job's output\n{out[-4000:]}")
        return jid, out

    def job_state(self, jid: str) -> str:
        out = labslurm.client(self.lab, "scontrol", "-o", "show", "job", jid, check=False).stdout
        m = re.search(r"JobState=(\S+)", out)
        return m[1] if m else "GONE"

    def run_dir(self, name: str) -> Path:
        return self.jobs / name

    def logs(self, jid: str, lines: int = 40) -> str:
        """The job's output and the tail of every Slurm daemon's log: what a failed assertion
        about a job shows (the lab, logs included, is gone once the module ends)."""
        parts = [("job output", self.jobs / f"slurm-{jid}.out")]
        parts += [(p.name, p) for p in sorted(labslurm.slurm_dir(self.lab).glob("slurm*.log"))]
        text = []
        for title, path in parts:
            tail = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            text += [f"--- {title}", *tail]
        return "\n".join(text)


@pytest.fixture(scope="module")
def cluster():
    why = reason()
    if why:
        print(f"Slurm tests not run: {why}")
        # CI (root, a lab, OpenMPI from .ci/run) has every piece: a missing one fails there.
        ci = os.environ.get("CI") and lab_mod.unavailable_reason() is None
        (pytest.fail if ci else pytest.skip)(f"Slurm tests not run: {why}")
    name = f"s{os.getpid() % 100000}"
    jobs = Path("/var/tmp") / f"prsgd-slurm-{name}"
    jobs.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    lab_cli("up", "--name", name, "--nodes", "2", "--slots", "2", "--cpus-per-node", "1",
            "--rate", "none", "--slurm")
    print(f"lab {name} with Slurm up in {time.monotonic() - t0:.1f} s")
    try:
        yield Cluster(lab_mod.Lab.load(name), jobs)
    finally:
        lab_cli("down", "--name", name)
        shutil.rmtree(jobs, ignore_errors=True)
    assert not lab_mod.lab_namespaces(name) and not lab_mod.lab_links(name)
    assert not (lab_mod.state_root() / name).exists()
    left = subprocess.run(["pgrep", "-f", f"/run/prsgd-lab/{name}/"], capture_output=True,
                          text=True).stdout.split()
    assert not left, f"processes of lab {name} left: {left}"


def multinode(cluster, run_id: str, args: list = (), **kw):
    """scripts/slurm/train-multinode.sbatch on both nodes, 2 ranks each: LONG into run_id."""
    return cluster.sbatch(SCRIPTS / "train-multinode.sbatch",
                          [*LONG, "--run-id", run_id, *args], CPU, OUT=cluster.jobs, **kw)


@pytest.fixture(scope="module")
def srun_reference(cluster) -> Path:
    """An uninterrupted LONG run by the committed multi-node script (srun --mpi=pmix)."""
    jid, out = multinode(cluster, "ref")
    assert run_status(cluster.run_dir("ref"))["status"] == "done", out[-3000:]
    return cluster.run_dir("ref")


@pytest.fixture(scope="module")
def hvd_reference(cluster) -> Path:
    """The same LONG run by `horovodrun -np 4 -H n1:2,n2:2 --gloo` from the launcher (ssh)."""
    exe = shutil.which("horovodrun", path=subprocess_env()["PATH"])
    cluster.run([exe, "-np", "4", "-H", cluster.lab.host_list(), "--gloo",
                 "--network-interface", lab_mod.IFACE, sys.executable, "-m", "prsgd.train", *LONG,
                 "--out", cluster.jobs, "--run-id", "hvd"])
    return cluster.run_dir("hvd")


def assert_equal_runs(a: Path, b: Path, ranks: int, rtol: float = 0.0) -> float:
    """Every rank's flat buffer (weights, momentum) and every metric row of run `a` equal to
    `b`'s: exactly, or to `rtol` (fp64); returns the largest relative difference."""
    ca, cb = load_ckpt(a), load_ckpt(b)
    assert (ca["epoch"], ca["step"]) == (cb["epoch"], cb["step"])
    worst = 0.0
    for r in range(ranks):
        x, y = ca["ranks"][r]["flat"], cb["ranks"][r]["flat"]
        assert x.dtype == y.dtype == torch.float64
        torch.testing.assert_close(x, y, rtol=rtol, atol=0.0, msg=f"rank {r} weights")
        worst = max(worst, ((x - y).abs() / y.abs().clamp_min(1e-300)).max().item())
    assert not torch.equal(ca["ranks"][0]["flat"], ca["ranks"][1]["flat"])   # not vacuous
    ra, rb = metric_rows(a), metric_rows(b)
    assert len(ra) == len(rb) > 0
    for x, y in zip(ra, rb):
        for k in x:
            if x[k] != y[k]:
                assert rtol and abs(float(x[k]) - float(y[k])) <= rtol * abs(float(y[k])), \
                    f"epoch {x['epoch']} {k}: {x[k]} {y[k]}"
    return worst


def provenance(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())["provenance"]


# --- the cluster ------------------------------------------------------------------------------
def test_cluster_has_two_nodes_with_own_names_cpus_and_addresses(cluster):
    lab = cluster.lab
    out = cluster.run(["srun", "-N2", "-n4", "sh", "-c", 'echo "$SLURM_PROCID $(hostname) '
                       '$(taskset -pc $$ | cut -d: -f2) $(ip -o -4 addr show labnet)"'])
    rows = sorted(line.split(None, 3) for line in out.strip().splitlines())
    assert [r[0] for r in rows] == ["0", "1", "2", "3"], out
    for rank, host, cpus, addr in rows:
        node = lab.hosts[int(rank) // 2]                 # block distribution: 2 tasks a node
        assert host == node and f"{lab.address(node)}/24" in addr, out
        assert cpus.strip() == ",".join(map(str, lab.cpus[int(rank) // 2])), out
    status = lab_cli("status", "--name", lab.name)
    assert "slurm: up" in status.stdout and re.search(r"lab\*\s+up\s+infinite\s+2\s+idle",
                                                      status.stdout), status.stdout
    # Idempotent: `slurm` on a healthy cluster leaves its daemons as they are.
    pids = labslurm.load_state(lab)
    lab_cli("slurm", "--name", lab.name)
    assert labslurm.load_state(lab) == pids


# --- launch paths -----------------------------------------------------------------------------
def test_multinode_sbatch_srun_pmix_equals_horovodrun(cluster, srun_reference, hvd_reference):
    """train-multinode.sbatch: `srun --mpi=pmix` ranks, Horovod's MPI controller, 2 nodes x 2 =
    horovodrun -np 4 -H n1:2,n2:2 --gloo over ssh, in fp64."""
    worst = assert_equal_runs(srun_reference, hvd_reference, 4, rtol=1e-9)
    print(f"srun --mpi=pmix vs horovodrun -H, fp64: max relative difference {worst:.3g}")
    p = provenance(srun_reference)
    assert p["world_size"] == 4 and p["host"] == cluster.lab.hosts[0]
    assert p["comm"]["horovod_build"]["controller"] == "mpi"
    assert provenance(hvd_reference)["comm"]["horovod_build"]["allreduce_path"] == "gloo"


def test_torchrun_under_srun_equals_horovodrun(cluster, hvd_reference):
    """train-torchrun.sbatch: one torchrun per node (srun), c10d rendezvous on node 1, 2 ranks
    each, --backend torchdist = horovodrun -np 4 -H in fp64."""
    jid, out = cluster.sbatch(SCRIPTS / "train-torchrun.sbatch", [*LONG, "--run-id", "td"],
                              ["--gpus-per-node=0", "--cpus-per-task=2", "--time=10"],
                              OUT=cluster.jobs, NPROC_PER_NODE=2)
    td = cluster.run_dir("td")
    assert run_status(td)["status"] == "done", out[-3000:]
    worst = assert_equal_runs(td, hvd_reference, 4, rtol=1e-9)
    print(f"torchrun under srun vs horovodrun -H, fp64: max relative difference {worst:.3g}")
    p = provenance(td)
    assert p["world_size"] == 4 and p["comm"]["backend"] == "torchdist"


def test_figure3_sbatch_one_job_equals_1node_sbatch_runs(cluster):
    """figure3-5x8gpu.sbatch as one job of 2 nodes x 2 ranks (prsgd.mpi_sweep: intervals 3 and 5,
    a node each) = train-1node-8gpu.sbatch's separate run (2 ranks on one node) of interval 5,
    the communicator on the second node; interval 3 differs from it (both were trained)."""
    jid, out = cluster.sbatch(SCRIPTS / "figure3-5x8gpu.sbatch", SHORT, ["--nodes=2", *CPU],
                              OUT=cluster.jobs / "fig3", INTERVALS="3,5", SEED=1)
    assert "interval 3: 2 ranks, done" in out and "interval 5: 2 ranks, done" in out, out[-3000:]
    runs = cluster.jobs / "fig3" / "runs"
    jid, out = cluster.sbatch(SCRIPTS / "train-1node-8gpu.sbatch",
                              [*SHORT, "--seed", "1", "--run-id", "I5-s1"],
                              CPU, OUT=cluster.jobs / "alone", INTERVAL=5)
    alone = cluster.jobs / "alone" / "I5-s1"
    assert run_status(alone)["status"] == "done", out[-3000:]
    assert_equal_runs(runs / "I5-s1", alone, 2)
    assert provenance(alone)["world_size"] == 2 == provenance(runs / "I5-s1")["world_size"]
    for interval, host in ((3, cluster.lab.hosts[0]), (5, cluster.lab.hosts[1])):
        assert provenance(runs / f"I{interval}-s1")["host"] == host       # a node each
    assert not torch.equal(load_ckpt(runs / "I3-s1")["ranks"][0]["flat"],
                           load_ckpt(runs / "I5-s1")["ranks"][0]["flat"])
    man = json.loads((cluster.jobs / "fig3" / "manifest.json").read_text())
    assert [(r["run_id"], r["status"]) for r in man["runs"]] == [("I3-s1", "done"),
                                                                ("I5-s1", "done")]


def test_sweep_driver_in_an_allocation_equals_horovodrun(cluster, hvd_reference):
    """sweep-horovodrun.sbatch: the sweep driver inside a 2-node allocation, horovodrun over ssh
    with the hosts from SLURM_JOB_NODELIST = the launcher's horovodrun -H, bit for bit."""
    jid, out = cluster.sbatch(SCRIPTS / "sweep-horovodrun.sbatch",
                              [*LOGREG, "--epochs", "20", "--lr-milestones", "15"],
                              ["--nodes=2", *CPU], OUT=cluster.jobs / "sweep", INTERVALS=5,
                              SEEDS=11, IFACE=lab_mod.IFACE)
    hosts = (cluster.jobs / "sweep" / f"hosts-{jid}.txt").read_text()
    assert hosts == "".join(f"{h} slots=2\n" for h in cluster.lab.hosts), hosts
    run = cluster.jobs / "sweep" / "runs" / "I5-s11"
    assert run_status(run)["status"] == "done", out[-3000:]
    assert_equal_runs(run, hvd_reference, 4)
    assert provenance(run)["host"] == cluster.lab.hosts[0]


# --- what a cluster does to jobs --------------------------------------------------------------
def wait_running(cluster, jid: str, cond, what: str, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not cond():
        state = cluster.job_state(jid)
        assert state in ("PENDING", "RUNNING", "CONFIGURING"), \
            f"job {jid} {state} before {what}:\n" + \
            (cluster.jobs / f"slurm-{jid}.out").read_text()[-3000:]
        assert time.monotonic() < end, f"no {what} within {timeout} s"
        time.sleep(0.05)


def scancel_term(cluster, jid: str) -> float:
    """`scancel --signal=TERM JOB`; seconds until the job has ended."""
    t0 = time.monotonic()
    labslurm.client(cluster.lab, "scancel", "--signal=TERM", jid)
    while cluster.job_state(jid) in ("RUNNING", "COMPLETING", "CONFIGURING"):
        assert time.monotonic() - t0 < FAULT_BOUND + 30, f"job {jid} did not end"
        time.sleep(0.05)
    return time.monotonic() - t0


def test_second_job_on_a_run_dir_is_refused_naming_the_first(cluster):
    """Two one-node jobs (train-1node-8gpu.sbatch) for one run directory: the second, on the
    other node, is refused by the run lock with the first's PIDs and node; the first runs on
    until `scancel --signal=TERM` ends it within the bound, status `interrupted`."""
    run_dir = cluster.run_dir("lock")
    args = [*LOGREG, "--epochs", "100000", "--seed", "3", "--run-id", "lock"]   # until stopped
    first, _ = cluster.sbatch(SCRIPTS / "train-1node-8gpu.sbatch", args, CPU, OUT=cluster.jobs,
                              wait=False)
    try:
        wait_running(cluster, first, lambda: run_status(run_dir).get("checkpoint_epoch"),
                     "epoch-1 checkpoint")
        owner = json.loads((run_dir / ".owner").read_text())
        second, out = cluster.sbatch(SCRIPTS / "train-1node-8gpu.sbatch", [*args, "--resume"],
                                     CPU, OUT=cluster.jobs, check=False)
        assert cluster.job_state(second) == "FAILED", out[-3000:]
        assert (f"is in use by a live process: pid {owner['pid']}, ppid {owner['ppid']} on "
                f"{owner['host']}") in out, out[-3000:]
        assert owner["host"] in cluster.lab.hosts
        assert cluster.job_state(first) == "RUNNING"       # the first runs on, undisturbed
        elapsed = scancel_term(cluster, first)
    finally:
        labslurm.client(cluster.lab, "scancel", first, check=False)
    print(f"scancel --signal=TERM: job {first} {cluster.job_state(first)} {elapsed:.1f} s later")
    assert elapsed < FAULT_BOUND, f"{elapsed:.1f} s"
    st = run_status(run_dir)
    assert st["status"] == "interrupted" and st["checkpoint_epoch"] >= 1, st
    assert not (run_dir / ".owner").exists()


def test_scancel_term_then_resubmission_resumes_bit_identical(cluster, srun_reference):
    """train-multinode.sbatch stopped by `scancel --signal=TERM` after its first epoch: status
    `interrupted`, the last checkpoint valid; resubmitted with --resume it finishes bit for
    bit as the uninterrupted srun_reference."""
    run_dir = cluster.run_dir("cut")
    first, _ = multinode(cluster, "cut", wait=False)
    try:
        wait_running(cluster, first, lambda: run_status(run_dir).get("checkpoint_epoch"),
                     "epoch-1 checkpoint")
        elapsed = scancel_term(cluster, first)
    finally:
        labslurm.client(cluster.lab, "scancel", first, check=False)
    st = run_status(run_dir)
    print(f"scancel --signal=TERM at epoch {st.get('epoch')}: job {cluster.job_state(first)} "
          f"{elapsed:.1f} s later")
    assert elapsed < FAULT_BOUND, f"{elapsed:.1f} s"
    assert st["status"] == "interrupted" and st["epoch"] < 20, st
    assert load_ckpt(run_dir)["epoch"] == st["checkpoint_epoch"] >= 1
    jid, out = multinode(cluster, "cut", ["--resume"])
    assert run_status(run_dir)["status"] == "done", out[-3000:]
    assert_equal_runs(run_dir, srun_reference, 4)
    assert json.loads((run_dir / "config.json").read_text())["resumes"]


def test_node_lost_mid_job_ends_it_then_the_requeued_job_resumes_bit_identical(
        cluster, srun_reference):
    """Node 2 dies mid-job (its slurmd and the job's processes there SIGKILLed): slurmctld sets
    it DOWN and ends the job on node 1 within NODE_LOSS_BOUND, leaving nothing running there,
    and requeues it. With the node back (`lab slurm` restarts its slurmd), the requeued job
    (SLURM_RESTART_COUNT > 0: the script adds --resume) finishes bit for bit as srun_reference."""
    lab, run_dir = cluster.lab, cluster.run_dir("lost")
    jid, _ = multinode(cluster, "lost", wait=False)
    n1, n2 = lab.hosts
    wait_running(cluster, jid, lambda: run_status(run_dir).get("checkpoint_epoch"),
                 "epoch-1 checkpoint")
    slurmd = labslurm.load_state(lab)["slurmd"][n2]
    victims = labslurm.job_pids(lab, n2)
    assert victims, "no job processes on node 2"
    t0 = time.monotonic()
    for pid in [slurmd, *victims]:
        os.kill(pid, 9)
    def ended():
        return cluster.job_state(jid) not in ("RUNNING", "COMPLETING") \
            and not labslurm.job_pids(lab, n1)
    end = t0 + NODE_LOSS_BOUND + 60
    while not ended():
        assert time.monotonic() < end, f"job {jid} still {cluster.job_state(jid)}"
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    state, nodes = cluster.job_state(jid), labslurm.node_states(lab)
    print(f"node {n2} lost at epoch {run_status(run_dir).get('epoch')}: job {jid} off node 1 "
          f"and {state} {elapsed:.1f} s later; nodes {nodes}")
    assert elapsed < NODE_LOSS_BOUND, f"{elapsed:.1f} s"
    assert state == "PENDING" and nodes[n2].startswith("down"), (state, nodes)
    assert run_status(run_dir)["status"] != "done"
    # The node back; the requeued job starts by itself after Slurm's requeue delay (CRED_EXPIRE),
    # not forced to start at once: see CRED_EXPIRE for what that raced with.
    lab_cli("slurm", "--name", lab.name)
    assert labslurm.node_states(lab)[n2] == "idle"
    end = time.monotonic() + labslurm.CRED_EXPIRE + 600
    while cluster.job_state(jid) not in ("COMPLETED", "FAILED", "CANCELLED"):
        assert time.monotonic() < end, \
            f"requeued job {jid} {cluster.job_state(jid)}:\n{cluster.logs(jid)}"
        time.sleep(0.2)
    out = (cluster.jobs / f"slurm-{jid}.out").read_text()
    assert cluster.job_state(jid) == "COMPLETED", out[-3000:]
    assert run_status(run_dir)["status"] == "done", out[-3000:]
    assert_equal_runs(run_dir, srun_reference, 4)
    assert json.loads((run_dir / "config.json").read_text())["resumes"]
