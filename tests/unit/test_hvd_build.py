"""The Horovod build decisions (src/prsgd/install/hvd_build.py): no GPU, no compiler needed."""
from __future__ import annotations


import pytest

from prsgd.install import hvd_build as hb

NCCL = dict(nccl_include="/x/nvidia/nccl/include", nccl_lib="/x/nvidia/nccl/lib")
NVCC13 = dict(nvcc="/usr/local/cuda-13.0/bin/nvcc", nvcc_version="13.0",
              nvcc_archs=(75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121),
              cuda_home="/usr/local/cuda-13.0")
ARCHS = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")


def cuda_probe(**kw) -> hb.Probe:
    base = dict(torch_version="2.14.1+cu130", torch_cuda="13.0", torch_archs=ARCHS,
                mpicxx=None, **NVCC13, **NCCL)
    base.update(kw)
    return hb.Probe(**base)


@pytest.mark.parametrize("tv,std", [("2.13.0", 17), ("2.13.0+cpu", 17), ("2.14.1+cu130", 20),
                                    ("2.15.0a0+git123", 20), ("2.1.0", 17)])
def test_cxx_standard_follows_torch(tv, std):
    assert hb.cxx_standard(tv) == std
    assert hb.plan(hb.Probe(torch_version=tv), {}).env["HOROVOD_CXX_STANDARD"] == str(std)


def test_cxx_standard_override():
    assert hb.cxx_standard("2.13.0", {"HOROVOD_CXX_STANDARD": "20"}) == 20


def test_cpu_torch_gloo_only_without_mpicxx():
    p = hb.plan(hb.Probe(torch_version="2.13.0+cpu"), {}, "abc")
    assert p.refusal is None and p.gpu_ops == "none" and not p.mpi
    assert p.env["HOROVOD_WITHOUT_MPI"] == "1" and "HOROVOD_GPU_OPERATIONS" in p.unset
    assert p.key == "hvd0.28.1-torch2.13.0_cpu-cp311-cxx17-mpi0-gpu_none-pabc"


def test_mpi_when_mpicxx_present_and_key_differs():
    no = hb.plan(hb.Probe(torch_version="2.13.0"), {})
    yes = hb.plan(hb.Probe(torch_version="2.13.0", mpicxx="/usr/bin/mpicxx"), {})
    assert yes.mpi and yes.env["HOROVOD_WITH_MPI"] == "1" and "HOROVOD_WITHOUT_MPI" in yes.unset
    assert "-mpi1-" in yes.key and "-mpi0-" in no.key
    off = hb.plan(hb.Probe(torch_version="2.13.0", mpicxx="/usr/bin/mpicxx"),
                  {"HOROVOD_WITHOUT_MPI": "1"})
    assert not off.mpi


def test_with_mpi_but_no_compiler_refuses():
    p = hb.plan(hb.Probe(torch_version="2.13.0"), {"HOROVOD_WITH_MPI": "1"})
    assert "mpicxx" in p.refusal


def test_cuda_torch_builds_nccl_by_default():
    p = hb.plan(cuda_probe(), {})
    assert p.refusal is None and p.gpu_ops == "NCCL"
    e = p.env
    assert e["HOROVOD_GPU_OPERATIONS"] == "NCCL" and e["HOROVOD_NCCL_LINK"] == "SHARED"
    assert e["CUDA_HOME"] == e["HOROVOD_CUDA_HOME"] == "/usr/local/cuda-13.0"
    assert e["HOROVOD_NCCL_INCLUDE"].endswith("nccl/include") and e["HOROVOD_NCCL_LIB"].endswith("nccl/lib")
    assert e["HOROVOD_BUILD_CUDA_CC_LIST"] == "75,80,86,90,100,120"
    assert e["HOROVOD_CXX_STANDARD"] == "20"
    assert "gpu_nccl-cuda13.0-cc75.80.86.90.100.120" in p.key and "-cxx20-" in p.key


@pytest.mark.parametrize("missing,reason", [
    (dict(nvcc=None, nvcc_version=None), "no nvcc"),
    (dict(nvcc_version="12.4"), "does not match"),
    (dict(nccl_include=None, nccl_lib=None), "nvidia-nccl-cu13"),
])
def test_cuda_torch_without_nccl_pieces_refuses(missing, reason):
    p = hb.plan(cuda_probe(**missing), {})
    assert p.refusal and reason in p.refusal and hb.OPT_OUT in p.refusal


def test_opt_out_keeps_gloo_staging_under_its_own_key():
    p = hb.plan(cuda_probe(nvcc=None, nvcc_version=None), {hb.OPT_OUT: "1"})
    assert p.refusal is None and p.gpu_ops == "none" and "gpu_none" in p.key
    assert "HOROVOD_GPU_OPERATIONS" in p.unset and "HOROVOD_GPU_OPERATIONS" not in p.env


def test_gpu_ops_on_cpu_torch_refuses():
    p = hb.plan(hb.Probe(torch_version="2.13.0+cpu"), {"HOROVOD_GPU_OPERATIONS": "NCCL"})
    assert "CPU build" in p.refusal


def test_cc_list_drops_what_nvcc_lacks_and_suffixed_targets():
    assert hb.cc_list(("sm_50", "sm_75", "sm_100f", "sm_90a", "sm_90"), (75, 90, 100), {}) == [75, 90]
    assert hb.cc_list(ARCHS, (75,), {"HOROVOD_BUILD_CUDA_CC_LIST": "90"}) == [90]
    assert hb.cc_list(("sm_50",), (75, 90), {}) == [90]   # nothing shared: newest nvcc target
    k90 = hb.plan(cuda_probe(), {"HOROVOD_BUILD_CUDA_CC_LIST": "90"}).key
    assert k90 != hb.plan(cuda_probe(), {}).key


def test_cuda_wheel_specs_match_torch_cuda():
    assert "nvidia-cuda-nvcc==13.0.*" in hb.cuda_wheel_specs("13.0")
    assert "nvidia-cuda-nvcc-cu12==12.8.*" in hb.cuda_wheel_specs("12.8")
    assert hb.nccl_wheel_spec("13.0") == "nvidia-nccl-cu13"


def test_installed_build_reused_only_when_it_is_the_plan():
    pl = hb.plan(cuda_probe(), {}, "p1")
    good = dict(version="0.28.1", key=pl.key, torch=True, gloo=True, mpi=False, nccl=True)
    assert hb.check_installed(pl, good) is None
    assert "not the planned" in hb.check_installed(pl, {**good, "key": None})   # no marker
    assert "not the planned" in hb.check_installed(pl, {**good, "key": pl.key + "x"})
    assert "no NCCL" in hb.check_installed(pl, {**good, "nccl": False})
    assert "0.28.0" in hb.check_installed(pl, {**good, "version": "0.28.0"})
    assert "does not import" in hb.check_installed(pl, {**good, "torch": False})
    assert hb.check_installed(pl, {}) is not None
    mpl = hb.plan(hb.Probe(torch_version="2.13.0", mpicxx="/usr/bin/mpicxx"), {})
    assert "no MPI" in hb.check_installed(mpl, dict(version="0.28.1", key=mpl.key, torch=True,
                                                    mpi=False))
