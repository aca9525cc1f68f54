#!/usr/bin/env bash
# The GPU checks issue 4 still owes, in one command for a lent accelerator machine (device tool):
#
#   bash scripts/gpu_session.sh OUT_DIR        (on the GPU box, from the repository root)
#
# 1. the CUDA-only tests (captured step == eager step, bitwise; packed sweeps on CUDA);
# 2. `make bench`'s variants (results JSON into OUT_DIR);
# 3. the Horovod build against the box's CUDA torch WITH NCCL (scripts/install_horovod.sh's
#    default for a CUDA torch; C++20 for torch >= 2.14), keeping the whole build log in OUT_DIR,
#    from the sdist carried in .device/cache/src/ (the box has no internet: `mkdir -p
#    .device/cache/src && cp ~/.cache/prsgd/src/horovod-0.28.1.tar.gz .device/cache/src/`, then
#    carry `.device`). Where the box has no nvcc of torch's CUDA version, the install would
#    fetch NVIDIA's nvcc wheels with pip, which needs PyPI: it looks in .device/wheels too
#    (PIP_FIND_LINKS), but those wheels (271 MB installed for CUDA 13.0) exceed what a call
#    carries (64 MiB), so on a box without nvcc the build step stops with that reason, logged;
# 4. if Horovod built: the doctor (build, allreduce path, 2-rank allreduce on CPU and CUDA
#    tensors against the CPU result), a 1-rank NCCL training smoke run (its config.json must say
#    allreduce_path nccl), and the cycle-time benchmark with GPU-box cores (one rank and eight).
# Each step's exit status goes to OUT_DIR/summary.txt; one failing step does not stop the others.
# Dry run of the non-GPU parts: DRY_RUN=1 bash scripts/gpu_session.sh OUT (prints the steps).
set -uo pipefail
out=${1:?usage: scripts/gpu_session.sh OUT_DIR}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
step() {  # step NAME COMMAND...: run, log to OUT/NAME.log, record the exit status
  local name=$1; shift
  if [ -n "${DRY_RUN:-}" ]; then echo "$name: $*" | tee -a "$out/summary.txt"; return 0; fi
  local t0=$SECONDS
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
  return $rc
}
# The device tool brings back at most 8 files: at the end everything but summary.txt and
# doctor.json is packed into OUT_DIR/logs.tgz (every step's log, the build log, JSONs, run dirs).
{ nvidia-smi -L; nvcc --version | tail -1; "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  git log --oneline -1 2>/dev/null; } > "$out/summary.txt" 2>&1

step cuda-tests "$PY" -m pytest -q -p no:cacheprovider tests/test_fast_step.py \
  tests/test_packed_equivalence.py -k "graph or cli_packed or first_step"
step bench "$PY" benchmarks/bench.py --out "$out"
export PRSGD_CACHE="$PWD/.device/cache"
[ -d "$PWD/.device/wheels" ] && export PIP_FIND_LINKS="$PWD/.device/wheels"
if step horovod-build bash scripts/install_horovod.sh "$PY"; then
  cp "$PRSGD_CACHE"/logs/*.log "$out/" 2>/dev/null || true   # the build log, success or not
  step doctor "$PY" -m prsgd.doctor --json "$out/doctor.json"
  # horovodrun next to $PY (the venv the build went into).
  hvdrun=$(dirname "$(command -v "$PY")")/horovodrun
  step nccl-smoke "$hvdrun" -np 1 --gloo "$PY" -m prsgd.train --preset smoke --dataset synthetic \
    --device cuda --interval 4 --out "$out/runs" --run-id nccl-smoke --epochs 1
  [ -n "${DRY_RUN:-}" ] || "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1]))["provenance"]["horovod_build"]; print("nccl-smoke allreduce_path:", r["allreduce_path"], r["built"]); sys.exit(r["allreduce_path"] != "nccl")' \
    "$out/runs/nccl-smoke/config.json" 2>&1 | tee -a "$out/summary.txt"
  step bench-comm "$PY" benchmarks/bench_comm.py --np 1,8 --cycle-times 0.1,1 --compute-ms 2 \
    --rounds 200 --repeats 3 --out "$out"
else
  cp "$PRSGD_CACHE"/logs/*.failed.log "$out/" 2>/dev/null || true
fi
( cd "$out" && shopt -s nullglob && files=(*) && keep=() &&
  for f in "${files[@]}"; do case "$f" in summary.txt|doctor.json|logs.tgz) ;; *) keep+=("$f");; esac; done &&
  if [ ${#keep[@]} -gt 0 ]; then tar czf logs.tgz "${keep[@]}" && rm -rf "${keep[@]}"; fi )
cat "$out/summary.txt"
