"""How Horovod 0.28.1 is built for the torch at hand: flags, cache key, or a refusal.

scripts/install_horovod.sh asks this module (stdlib only: it runs before prsgd is installed) and
does what it says. The decisions are pure functions of a `Probe` (what the environment has) and
the environment variables, so the unit tests cover every branch without a GPU:

- the C++ standard follows torch's headers: torch >= 2.14 uses C++20 features
  (std::strong_ordering), torch 2.1-2.13 needs C++17 (upstream Horovod PR 3998);
- a CUDA torch gets NCCL GPU operations, with an nvcc of torch's CUDA major version (from NVIDIA's
  pip wheels when the system has none) and the NCCL of the nvidia-nccl-cuXX wheel; without them
  the install stops with the reason, unless PRSGD_ALLOW_GLOO_STAGING=1 asks for CPU staging;
- MPI is built in when an MPI C++ compiler is on PATH;
- the cache key names all of that, and an installed Horovod is reused only when the key it was
  installed with (horovod/prsgd_build.json) is the planned one.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

HVD_VERSION = "0.28.1"
MARKER = "prsgd_build.json"  # written into the installed horovod package by the install script
OPT_OUT = "PRSGD_ALLOW_GLOO_STAGING"


@dataclass(frozen=True)
class Probe:
    """What the target Python's environment has; `probe()` fills it, tests build it by hand."""
    torch_version: str                      # "2.14.1+cu130"
    torch_cuda: str | None = None           # "13.0", None for a CPU build
    torch_archs: tuple[str, ...] = ()       # torch.cuda.get_arch_list(): ("sm_75", "sm_90", ...)
    python_tag: str = "cp311"
    nvcc: str | None = None                 # path of an nvcc found
    nvcc_version: str | None = None         # "13.0"
    nvcc_archs: tuple[int, ...] = ()        # nvcc --list-gpu-arch, numbers only
    cuda_home: str | None = None            # the toolkit folder nvcc reports (TOP)
    mpicxx: str | None = None
    nccl_include: str | None = None         # folder holding nccl.h
    nccl_lib: str | None = None             # folder holding libnccl.so*


@dataclass
class Plan:
    key: str
    cxx_std: int
    mpi: bool
    gpu_ops: str                            # "NCCL" or "none"
    env: dict[str, str] = field(default_factory=dict)    # exported for Horovod's setup.py
    unset: list[str] = field(default_factory=list)       # removed from the environment
    refusal: str | None = None              # why the build must not go ahead


def version_tuple(v: str) -> tuple[int, ...]:
    """'2.14.1+cu130' -> (2, 14, 1); a pre-release '2.15.0a0' -> (2, 15, 0)."""
    return tuple(int(m) for m in re.findall(r"\d+", v.split("+")[0])[:3])


def cxx_standard(torch_version: str, env: dict[str, str] | None = None) -> int:
    """C++ standard for Horovod's torch extension (and the whole build, which must agree)."""
    env = env or {}
    if env.get("HOROVOD_CXX_STANDARD"):
        return int(env["HOROVOD_CXX_STANDARD"])
    return 20 if version_tuple(torch_version)[:2] >= (2, 14) else 17


def cuda_major(v: str | None) -> int | None:
    return version_tuple(v)[0] if v else None


def cc_list(torch_archs, nvcc_archs, env) -> list[int]:
    """Compute capabilities to compile kernels for: the user's HOROVOD_BUILD_CUDA_CC_LIST, else
    torch's own plain sm_XX targets that this nvcc supports (CUDA 13 dropped sm_50-72 and lists
    suffixed targets such as sm_100f, which Horovod's parser cannot take)."""
    if env.get("HOROVOD_BUILD_CUDA_CC_LIST"):
        return [int(x) for x in env["HOROVOD_BUILD_CUDA_CC_LIST"].split(",")]
    plain = sorted({int(m.group(1)) for a in torch_archs if (m := re.fullmatch(r"sm_(\d+)", a))})
    ok = [c for c in plain if not nvcc_archs or c in nvcc_archs]
    return ok or sorted(nvcc_archs)[-1:]


def cuda_wheel_specs(torch_cuda: str) -> list[str]:
    """NVIDIA's pip wheels that make a CUDA toolkit able to build Horovod's kernels."""
    major, minor = version_tuple(torch_cuda)[:2]
    pin = f"=={major}.{minor}.*"
    if major >= 13:   # one nvidia/cu13 tree; the -cu13 names are deprecated aliases
        names = ["nvidia-cuda-nvcc", "nvidia-cuda-runtime", "nvidia-cuda-cccl", "nvidia-cuda-crt",
                 "nvidia-nvvm"]
    else:
        names = [f"nvidia-cuda-{p}-cu{major}" for p in ("nvcc", "runtime", "cccl")]
    return [n + pin for n in names]


def nccl_wheel_spec(torch_cuda: str) -> str:
    return f"nvidia-nccl-cu{cuda_major(torch_cuda)}"


def _gpu_part(p: Probe, env: dict[str, str], plan_env: dict[str, str]) -> tuple[str, str | None]:
    """GPU operations for a CUDA torch: ('NCCL', None), or ('none', refusal-or-None)."""
    if env.get(OPT_OUT) == "1":
        return "none", None
    why = None
    if not p.nvcc:
        why = "no nvcc found (system CUDA or NVIDIA's pip wheels)"
    elif cuda_major(p.nvcc_version) != cuda_major(p.torch_cuda):
        why = f"nvcc {p.nvcc_version} does not match torch's CUDA {p.torch_cuda}"
    elif not (p.nccl_include and p.nccl_lib):
        why = f"no NCCL found (pip install {nccl_wheel_spec(p.torch_cuda)})"
    if why:
        return "none", (f"torch {p.torch_version} is a CUDA build but Horovod cannot be built with "
                        f"NCCL: {why}. Set {OPT_OUT}=1 to build without (CUDA tensors then go "
                        "through host memory and Gloo/MPI).")
    cuda_home = p.cuda_home or os.path.dirname(os.path.dirname(p.nvcc))
    ccs = cc_list(p.torch_archs, p.nvcc_archs, env)
    plan_env.update({
        "HOROVOD_GPU_OPERATIONS": "NCCL", "HOROVOD_NCCL_LINK": "SHARED",
        "HOROVOD_NCCL_INCLUDE": p.nccl_include, "HOROVOD_NCCL_LIB": p.nccl_lib,
        "CUDA_HOME": cuda_home, "HOROVOD_CUDA_HOME": cuda_home,
        "HOROVOD_BUILD_CUDA_CC_LIST": ",".join(map(str, ccs)),
        "HOROVOD_CUDA_STANDARD": "17",   # CUDA 13's CCCL needs >= 17; kernels see no torch header
    })
    return "NCCL", None


def plan(p: Probe, env: dict[str, str], patch_sum: str = "") -> Plan:
    """The build for this probe and environment (pure)."""
    std = cxx_standard(p.torch_version, env)
    e = {"HOROVOD_WITH_PYTORCH": "1", "HOROVOD_WITH_GLOO": "1", "HOROVOD_WITHOUT_TENSORFLOW": "1",
         "HOROVOD_WITHOUT_MXNET": "1", "HOROVOD_CXX_STANDARD": str(std)}
    unset = ["HOROVOD_GPU_ALLREDUCE", "HOROVOD_GPU_BROADCAST", "HOROVOD_GPU_ALLGATHER",
             "HOROVOD_GPU_ALLTOALL", "HOROVOD_GPU_REDUCESCATTER", "HOROVOD_GPU"]
    refusal = None
    mpi = bool(p.mpicxx) and env.get("HOROVOD_WITHOUT_MPI") != "1"
    if env.get("HOROVOD_WITH_MPI") == "1" and not p.mpicxx:
        refusal = "HOROVOD_WITH_MPI=1 but no mpicxx on PATH (apt-get install libopenmpi-dev)"
    e["HOROVOD_WITH_MPI" if mpi else "HOROVOD_WITHOUT_MPI"] = "1"
    unset.append("HOROVOD_WITHOUT_MPI" if mpi else "HOROVOD_WITH_MPI")
    if p.torch_cuda:
        gpu, why = _gpu_part(p, env, e)
        refusal = refusal or why
    else:
        gpu = "none"
        if env.get("HOROVOD_GPU_OPERATIONS"):
            refusal = (f"HOROVOD_GPU_OPERATIONS={env['HOROVOD_GPU_OPERATIONS']} but torch "
                       f"{p.torch_version} is a CPU build")
    if gpu == "none":
        unset += ["HOROVOD_GPU_OPERATIONS", "HOROVOD_NCCL_LINK", "HOROVOD_BUILD_CUDA_CC_LIST"]
    gpu_tag = "none"
    if gpu == "NCCL":
        gpu_tag = f"nccl-cuda{p.torch_cuda}-cc{e['HOROVOD_BUILD_CUDA_CC_LIST'].replace(',', '.')}"
    key = (f"hvd{HVD_VERSION}-torch{p.torch_version.replace('+', '_')}-{p.python_tag}-cxx{std}"
           f"-mpi{int(mpi)}-gpu_{gpu_tag}" + (f"-p{patch_sum}" if patch_sum else ""))
    return Plan(key=key, cxx_std=std, mpi=mpi, gpu_ops=gpu, env=e, unset=unset, refusal=refusal)


def check_installed(plan_: Plan, built: dict) -> str | None:
    """Why an installed Horovod (its `built` capabilities and marker key) does not fit the plan."""
    if built.get("version") != HVD_VERSION:
        return f"horovod {built.get('version')} installed, {HVD_VERSION} wanted"
    if built.get("key") != plan_.key:
        return f"installed build {built.get('key')} is not the planned {plan_.key}"
    if not built.get("torch"):
        return "horovod.torch does not import"
    if plan_.gpu_ops == "NCCL" and not built.get("nccl"):
        return "planned NCCL but the installed Horovod has no NCCL operations"
    if plan_.mpi and not built.get("mpi"):
        return "planned MPI but the installed Horovod has no MPI"
    return None


# --- probing the environment (runs in the Python Horovod is built for) -------------------------
def _nvcc_info(nvcc: str) -> tuple[str | None, tuple[int, ...], str | None]:
    """(release, archs, toolkit folder) of an nvcc; the folder from its own dry run, since a
    wrapper script such as /usr/local/bin/nvcc sits outside the toolkit."""
    def run(*args):
        return subprocess.run([nvcc, *args], capture_output=True, text=True, timeout=60)
    try:
        out, archs = run("--version").stdout, run("--list-gpu-arch").stdout
        dry = run("--dryrun", "-E", "-x", "cu", os.devnull).stderr
    except (OSError, subprocess.SubprocessError):
        return None, (), None
    m = re.search(r"release (\d+\.\d+)", out)
    top = re.search(r"^#\$ TOP=(.*)$", dry, re.M)
    return ((m.group(1) if m else None),
            tuple(sorted({int(a) for a in re.findall(r"compute_(\d+)\b", archs)})),
            os.path.normpath(top.group(1)) if top else None)


def nvcc_candidates(env: dict[str, str], cache: str) -> list[str]:
    """Every nvcc that could serve, in order of preference: the user's CUDA_HOME, PATH, the usual
    system location, then the toolkit the install script assembled from pip wheels."""
    c = [os.path.join(env[k], "bin", "nvcc") for k in ("HOROVOD_CUDA_HOME", "CUDA_HOME") if env.get(k)]
    c += [shutil.which("nvcc") or "", "/usr/local/cuda/bin/nvcc"]
    c += sorted(glob.glob(os.path.join(cache, "cuda-*", "home", "bin", "nvcc")), reverse=True)
    seen = []
    for x in c:
        if x and os.access(x, os.X_OK) and x not in seen:
            seen.append(x)
    return seen


def find_nccl(env: dict[str, str]) -> tuple[str | None, str | None]:
    if env.get("HOROVOD_NCCL_INCLUDE") and env.get("HOROVOD_NCCL_LIB"):
        return env["HOROVOD_NCCL_INCLUDE"], env["HOROVOD_NCCL_LIB"]
    try:
        import nvidia  # namespace package of NVIDIA's pip wheels
        roots = [os.path.join(p, "nccl") for p in nvidia.__path__]
    except ImportError:
        roots = []
    roots += ["/usr"]
    for r in roots:
        inc = os.path.join(r, "include")
        for lib in (os.path.join(r, "lib"), os.path.join(r, "lib", "x86_64-linux-gnu")):
            if os.path.exists(os.path.join(inc, "nccl.h")) and \
               any(f.startswith("libnccl.so") for f in os.listdir(lib) if os.path.isdir(lib)):
                return inc, lib
    return None, None


def ensure_nccl_link(lib: str) -> None:
    """The wheel ships only libnccl.so.2; CMake's find_library(nccl) needs libnccl.so."""
    so = os.path.join(lib, "libnccl.so")
    if not os.path.exists(so) and os.path.exists(so + ".2"):
        os.symlink("libnccl.so.2", so)


def probe(env: dict[str, str], cache: str) -> Probe:
    import torch
    cuda = torch.version.cuda
    archs = tuple(torch.cuda.get_arch_list()) if cuda else ()
    nvcc = ver = home = None
    nv_archs: tuple[int, ...] = ()
    for cand in nvcc_candidates(env, cache) if cuda else []:
        v, a, h = _nvcc_info(cand)
        if nvcc is None or (cuda_major(v) == cuda_major(cuda) and cuda_major(ver) != cuda_major(cuda)):
            nvcc, ver, nv_archs, home = cand, v, a, h
    inc, lib = find_nccl(env) if cuda else (None, None)
    if lib:
        ensure_nccl_link(lib)
    mpicxx = None if env.get("HOROVOD_WITHOUT_MPI") == "1" else shutil.which("mpicxx")
    return Probe(torch_version=torch.__version__, torch_cuda=cuda, torch_archs=archs,
                 python_tag=f"cp{sys.version_info[0]}{sys.version_info[1]}", nvcc=nvcc,
                 nvcc_version=ver, nvcc_archs=nv_archs, cuda_home=home, mpicxx=mpicxx,
                 nccl_include=inc, nccl_lib=lib)


def installed_build() -> dict:
    """What the installed Horovod is: version, marker key, and its compiled-in capabilities."""
    try:
        import horovod
    except ImportError:
        return {}
    out = {"version": getattr(horovod, "__version__", None)}
    marker = os.path.join(os.path.dirname(horovod.__file__), MARKER)
    if os.path.exists(marker):
        with open(marker) as f:
            out["key"] = json.load(f).get("key")
    try:
        import horovod.torch as hvd
        out.update(torch=True, gloo=bool(hvd.gloo_built()), mpi=bool(hvd.mpi_built()),
                   nccl=bool(hvd.nccl_built()))
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable"
        out.update(torch=False, error=f"{type(e).__name__}: {e}")
    return out


def _shell(plan_: Plan) -> str:
    lines = [f"unset {k}" for k in plan_.unset]
    lines += [f"export {k}='{v}'" for k, v in plan_.env.items()]
    lines += [f"HVD_KEY='{plan_.key}'", f"HVD_GPU_OPS='{plan_.gpu_ops}'"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """CLI for scripts/install_horovod.sh:
      needs                 pip specs to fetch first: 'cuda SPEC...' / 'venv SPEC' lines
      plan PATCHSUM         shell lines to eval; exit 3 with the reason when the build must not run
      check PATCHSUM        exit 0 when the installed Horovod is the planned build, else 1 + reason
      mark KEY              record KEY in the installed horovod package
    """
    env = dict(os.environ)
    cache = env.get("PRSGD_CACHE", os.path.expanduser("~/.cache/prsgd"))
    cmd = argv[0] if argv else ""
    if cmd == "needs":
        p = probe(env, cache)
        if p.torch_cuda and env.get(OPT_OUT) != "1":
            if cuda_major(p.nvcc_version) != cuda_major(p.torch_cuda):
                print("cuda " + " ".join(cuda_wheel_specs(p.torch_cuda)))
            if not p.nccl_lib:
                print("venv " + nccl_wheel_spec(p.torch_cuda))
        return 0
    if cmd in ("plan", "check"):
        pl = plan(probe(env, cache), env, argv[1] if len(argv) > 1 else "")
        if pl.refusal:
            print(f"install_horovod: {pl.refusal}", file=sys.stderr)
            return 3
        if cmd == "plan":
            print(_shell(pl))
            return 0
        why = check_installed(pl, installed_build())
        print(why or f"installed horovod is the planned build {pl.key}")
        return 1 if why else 0
    if cmd == "mark":
        import horovod
        flags = {k: v for k, v in sorted(env.items()) if k.startswith("HOROVOD_") or k == "CUDA_HOME"}
        with open(os.path.join(os.path.dirname(horovod.__file__), MARKER), "w") as f:
            json.dump({"key": argv[1], "flags": flags}, f, indent=1)
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
