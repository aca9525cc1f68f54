#!/usr/bin/env bash
# Build Horovod 0.28.1 (the last release) from its PyPI source release, patched so that it builds
# against current torch and gcc, and install it into the given Python's environment.
#
#   scripts/install_horovod.sh [PYTHON]       (default: python3 on PATH)
#
# The built wheel is cached outside the repository, keyed by what it was built against (Horovod,
# torch, Python versions, the build flags and the patch), so later builds on the same machine, CI
# included, reuse it. Cache folder: $PRSGD_CACHE (default ~/.cache/prsgd).
#
# Always built with PyTorch and Gloo; with MPI when an MPI compiler is found; with NCCL GPU
# operations only when HOROVOD_GPU_OPERATIONS=NCCL is set and CUDA is present.
set -euo pipefail

PY=${1:-python3}
HVD_VERSION=0.28.1
here=$(cd "$(dirname "$0")" && pwd)
patch_file="$here/patches/horovod-$HVD_VERSION.patch"
cache=${PRSGD_CACHE:-$HOME/.cache/prsgd}
mkdir -p "$cache/wheels" "$cache/src"

if "$PY" -c "import horovod.torch" 2>/dev/null && \
   [ "$("$PY" -c 'import horovod; print(horovod.__version__)')" = "$HVD_VERSION" ]; then
  echo "horovod $HVD_VERSION already installed for $PY"; exit 0
fi

torch_version=$("$PY" -c 'import torch; print(torch.__version__)') || {
  echo "install_horovod.sh: torch must be installed first in $PY's environment" >&2; exit 1; }
py_tag=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')

# Build flags. Horovod's setup.py reads these from the environment.
export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1
export HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
if command -v mpicxx >/dev/null 2>&1 || command -v mpicc >/dev/null 2>&1; then
  export HOROVOD_WITH_MPI=1
else
  export HOROVOD_WITHOUT_MPI=1
fi
if [ "${HOROVOD_GPU_OPERATIONS:-}" = "NCCL" ] && command -v nvcc >/dev/null 2>&1; then
  export HOROVOD_GPU_OPERATIONS=NCCL
else
  unset HOROVOD_GPU_OPERATIONS HOROVOD_GPU_ALLREDUCE HOROVOD_GPU_BROADCAST || true
fi
# cmake >= 4 refuses the bundled gloo's cmake_minimum_required(2.8.12) without this.
export CMAKE_POLICY_VERSION_MINIMUM=3.5
export MAKEFLAGS="-j$(nproc)"
export HOROVOD_BUILD_ARCH_FLAGS=${HOROVOD_BUILD_ARCH_FLAGS:-}

flags="mpi=${HOROVOD_WITH_MPI:-0}-gpu=${HOROVOD_GPU_OPERATIONS:-none}"
patch_sum=$(sha256sum "$patch_file" | cut -c1-12)
key="hvd$HVD_VERSION-torch${torch_version//+/_}-$py_tag-$flags-p$patch_sum"
wheel_dir="$cache/wheels/$key"

if ! ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1; then
  echo "building horovod $HVD_VERSION ($key); this takes several minutes on 2 cores"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  sdist="$cache/src/horovod-$HVD_VERSION.tar.gz"
  if [ ! -f "$sdist" ]; then
    "$PY" -m pip download --quiet --no-deps --no-binary :all: "horovod==$HVD_VERSION" -d "$work/dl"
    mv "$work/dl/horovod-$HVD_VERSION.tar.gz" "$sdist"
  fi
  tar xzf "$sdist" -C "$work"
  (cd "$work/horovod-$HVD_VERSION" && patch -p1 --quiet < "$patch_file")
  # The whole log is kept on failure (a GPU box's CUDA build fails deep inside CMake output).
  "$PY" -m pip wheel --no-deps --no-build-isolation -w "$work/out" "$work/horovod-$HVD_VERSION" \
    > "$work/build.log" 2>&1 || { tail -60 "$work/build.log" >&2; mkdir -p "$cache/logs";
      cp "$work/build.log" "$cache/logs/$key.failed.log";
      echo "horovod build failed; full log: $cache/logs/$key.failed.log" >&2; exit 1; }
  mkdir -p "$wheel_dir.tmp" && mv "$work"/out/horovod-*.whl "$wheel_dir.tmp"/ && mv "$wheel_dir.tmp" "$wheel_dir"
fi
"$PY" -m pip install --quiet --no-deps "$wheel_dir"/horovod-*.whl
# Horovod's runtime needs; only the missing ones, so an offline box that has them all is fine.
missing=$("$PY" -c 'import importlib.util as u; print(" ".join(p for p, m in (("cloudpickle", "cloudpickle"), ("psutil", "psutil"), ("pyyaml", "yaml"), ("packaging", "packaging"), ("cffi", "cffi")) if u.find_spec(m) is None))')
[ -z "$missing" ] || "$PY" -m pip install --quiet $missing
echo "installed horovod $HVD_VERSION from $wheel_dir"
