#!/usr/bin/env bash
# Build Horovod 0.28.1 (the last release) from its PyPI source release, patched so that it builds
# against current torch, gcc and CUDA, and install it into the given Python's environment.
#
#   scripts/install_horovod.sh [PYTHON]       (default: python3 on PATH)
#
# What is built is decided by src/prsgd/install/hvd_build.py (unit-tested): PyTorch + Gloo always; MPI
# when mpicxx is on PATH; NCCL GPU operations when torch is a CUDA build (nvcc from the system or
# NVIDIA's pip wheels of torch's CUDA version, NCCL from the nvidia-nccl-cuXX wheel); the C++
# standard follows torch (C++20 for torch >= 2.14). A CUDA torch whose Horovod would lack NCCL
# stops here with the reason, unless PRSGD_ALLOW_GLOO_STAGING=1.
#
# The built wheel is cached outside the repository under a key naming all of that (Horovod, torch,
# Python, C++ standard, MPI, GPU operations, CUDA archs, patch), so later builds on the same
# machine, CI included, reuse it. An installed Horovod is kept only when it was installed from the
# planned key and has the planned capabilities; otherwise it is replaced. Cache: $PRSGD_CACHE
# (default ~/.cache/prsgd); failed build logs: $PRSGD_CACHE/logs.
set -euo pipefail

PY=${1:-python3}
HVD_VERSION=0.28.1
here=$(cd "$(dirname "$0")" && pwd)
patch_file="$here/patches/horovod-$HVD_VERSION.patch"
export PRSGD_CACHE=${PRSGD_CACHE:-$HOME/.cache/prsgd}
cache=$PRSGD_CACHE
mkdir -p "$cache/wheels" "$cache/src" "$cache/logs"
# hvd_build runs from this checkout, so it works before prsgd is installed in $PY's environment.
hvd_build() { PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m prsgd.install.hvd_build "$@"; }

"$PY" -c 'import torch' 2>/dev/null || {
  echo "install_horovod.sh: torch must be installed first in $PY's environment" >&2; exit 1; }
patch_sum=$(sha256sum "$patch_file" | cut -c1-12)

# 1. What a CUDA torch still needs: nvcc (+ headers) of its CUDA version, the NCCL wheel.
while read -r where specs; do
  case "$where" in
    cuda) ver=$(echo "$specs" | grep -o '==[0-9]*\.[0-9]*' | head -1 | tr -d '=')
          tgt="$cache/cuda-$ver"
          echo "fetching a CUDA $ver compiler from NVIDIA's pip wheels into $tgt"
          "$PY" -m pip install --quiet --target "$tgt/wheels" $specs
          # One CUDA_HOME: the wheels' bin/include/lib trees merged by symlinks.
          rm -rf "$tgt/home" && mkdir -p "$tgt/home"/{bin,include,lib,nvvm}
          for d in "$tgt"/wheels/nvidia/*/; do
            for sub in bin include lib nvvm; do
              [ -d "$d$sub" ] && for f in "$d$sub"/*; do ln -sfn "$f" "$tgt/home/$sub/"; done
            done
          done
          ln -sfn lib "$tgt/home/lib64" ;;
    venv) echo "installing $specs into $PY's environment"
          "$PY" -m pip install --quiet $specs ;;
  esac
done < <(hvd_build needs)

# 2. The plan: flags exported for Horovod's setup.py, the cache key, or a refusal (exit 3).
plan=$(hvd_build plan "$patch_sum") || exit $?
eval "$plan"
if hvd_build check "$patch_sum" >/dev/null 2>&1; then
  echo "horovod $HVD_VERSION already installed as $HVD_KEY"; exit 0
fi
# cmake >= 4 refuses the bundled gloo's cmake_minimum_required(2.8.12) without this.
export CMAKE_POLICY_VERSION_MINIMUM=3.5
export MAKEFLAGS="-j$(nproc)"
export HOROVOD_BUILD_ARCH_FLAGS=${HOROVOD_BUILD_ARCH_FLAGS:-}
[ -z "${CUDA_HOME:-}" ] || export PATH="$CUDA_HOME/bin:$PATH"
wheel_dir="$cache/wheels/$HVD_KEY"

if ! ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1; then
  echo "building horovod $HVD_VERSION ($HVD_KEY); this takes several minutes on 2 cores"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  sdist="$cache/src/horovod-$HVD_VERSION.tar.gz"
  if [ ! -f "$sdist" ]; then
    "$PY" -m pip download --quiet --no-deps --no-binary :all: "horovod==$HVD_VERSION" -d "$work/dl"
    mv "$work/dl/horovod-$HVD_VERSION.tar.gz" "$sdist"
  fi
  tar xzf "$sdist" -C "$work"
  (cd "$work/horovod-$HVD_VERSION" && patch -p1 --quiet < "$patch_file")
  # The whole log is kept, failed or not (a GPU box's CUDA build fails deep inside CMake output).
  log="$cache/logs/$HVD_KEY.log"
  env | grep -E '^(HOROVOD_|CUDA_HOME=)' | sort > "$log"
  if ! "$PY" -m pip wheel -v --no-deps --no-build-isolation -w "$work/out" \
       "$work/horovod-$HVD_VERSION" >> "$log" 2>&1; then
    tail -60 "$log" >&2; mv "$log" "$cache/logs/$HVD_KEY.failed.log"
    echo "horovod build failed; full log: $cache/logs/$HVD_KEY.failed.log" >&2; exit 1
  fi
  mkdir -p "$wheel_dir.tmp" && mv "$work"/out/horovod-*.whl "$wheel_dir.tmp"/ && mv "$wheel_dir.tmp" "$wheel_dir"
  echo "build log: $log"
fi
"$PY" -m pip install --quiet --no-deps --force-reinstall "$wheel_dir"/horovod-*.whl
# Horovod's runtime needs; only the missing ones, so an offline box that has them all is fine.
missing=$("$PY" -c 'import importlib.util as u; print(" ".join(p for p, m in (("cloudpickle", "cloudpickle"), ("psutil", "psutil"), ("pyyaml", "yaml"), ("packaging", "packaging"), ("cffi", "cffi")) if u.find_spec(m) is None))')
[ -z "$missing" ] || "$PY" -m pip install --quiet $missing
hvd_build mark "$HVD_KEY"
# The installed build must be what was planned (NCCL on a CUDA torch, MPI where mpicxx is).
hvd_build check "$patch_sum" || { echo "install_horovod.sh: installed Horovod is not the planned build" >&2; exit 1; }
echo "installed horovod $HVD_VERSION from $wheel_dir"
