#!/usr/bin/env bash
# Issue 19 §8: does compressing the averages cost loss or accuracy, and how does it compare with
# raising I to the same bytes? 8 workers packed in one CPU process (the packed backend equals
# 8 real ranks in fp64), the shared JPEG CIFAR-10 copy (cifar10-jpeg-q75), one seed.
#   bash scripts/compression_runs.sh [DATA] [OUT]     (make compression: these runs, then the plot)
set -euo pipefail
DATA=${1:-../shared/data/cifar10-jpeg}
OUT=${2:-results/compress-cpu/runs}
PY=${PY:-.venv/bin/python}
common=(--preset demo --dataset imagefolder --data "$DATA" --backend packed --workers 8
        --train-subset 8192 --test-subset 1000 --epochs 12 --lr-milestones 9 --seed 0
        --out "$OUT" --progress true)
run() { local id=$1; shift; "$PY" -m prsgd.train "${common[@]}" --run-id "$id" "$@"; }
run I4-fp32      --interval 4
run I4-bf16      --interval 4 --compressor bf16
run I4-int8      --interval 4 --compressor int8
run I4-topk1pc   --interval 4 --compressor topk --topk-ratio 0.01
run I16-fp32     --interval 16     # 4x fewer rounds: about int8's bytes at I = 4
run I4-topk1pc-noEF --interval 4 --compressor topk --topk-ratio 0.01 --error-feedback false
