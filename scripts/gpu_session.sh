#!/usr/bin/env bash
# The GPU checks issue 4 still owes, in one command for a lent accelerator machine (device tool):
#
#   bash scripts/gpu_session.sh OUT_DIR        (on the GPU box, from the repository root)
#
# 1. the CUDA-only tests (captured step == eager step, bitwise; packed sweeps on CUDA);
# 2. `make bench`'s variants (results JSON into OUT_DIR);
# 3. a Horovod build against the box's CUDA torch with Gloo CPU operations, keeping the whole
#    build log in OUT_DIR (it failed there once, with no log kept), from the sdist carried in
#    .device/cache/src/ (the box has no internet: `mkdir -p .device/cache/src && cp
#    ~/.cache/prsgd/src/horovod-0.28.1.tar.gz .device/cache/src/`, then carry `.device`);
# 4. if Horovod built: the cycle-time benchmark with GPU-box cores (one rank and eight).
# Each step's exit status goes to OUT_DIR/summary.txt; one failing step does not stop the others.
set -uo pipefail
out=${1:?usage: scripts/gpu_session.sh OUT_DIR}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
step() {  # step NAME COMMAND...: run, log to OUT/NAME.log, record the exit status
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
  return $rc
}
# (The device tool brings back at most 8 files: summary, 3-4 logs, 2 JSONs, a failed build log.)
{ nvidia-smi -L; "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  git log --oneline -1 2>/dev/null; } > "$out/summary.txt" 2>&1

step cuda-tests "$PY" -m pytest -q -p no:cacheprovider tests/test_fast_step.py \
  tests/test_packed_equivalence.py -k "graph or cli_packed or first_step"
step bench "$PY" scripts/bench.py --out "$out"
export PRSGD_CACHE="$PWD/.device/cache"
if step horovod-build bash scripts/install_horovod.sh "$PY"; then
  step bench-comm "$PY" -m prsgd.bench_comm --np 1,8 --cycle-times 0.1,1 --compute-ms 2 \
    --rounds 200 --repeats 3 --out "$out"
else
  cp "$PRSGD_CACHE"/logs/*.failed.log "$out/" 2>/dev/null || true
fi
cat "$out/summary.txt"
