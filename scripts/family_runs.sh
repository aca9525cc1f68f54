#!/usr/bin/env bash
# The family figure's runs (README, "The family of algorithms"): every algorithm on the same small
# real run, then Algorithm 1 vs Algorithm 3 with one worker slowed 2x; then the figure.
#   bash scripts/family_runs.sh [OUT=results/family] [DATA=../shared/data/cifar10-jpeg]
# Needs horovodrun and python (the project venv) on PATH and PYTHONPATH=src.
set -euo pipefail
OUT=${1:-results/family}
DATA=${2:-../shared/data/cifar10-jpeg}
RUNS=$OUT/runs
mkdir -p "$RUNS"
COMMON=(--preset demo --dataset imagefolder --data "$DATA" --train-subset 1024 --test-subset 500
        --epochs 6 --lr-milestones 4 --seed 0 --out "$RUNS" --progress false)

run() {  # run NP NAME ARGS...: one run into $RUNS/NAME, skipped when it already finished
    local np=$1 name=$2; shift 2
    if [ -f "$RUNS/$name/metrics.csv" ] && [ "$(wc -l < "$RUNS/$name/metrics.csv")" -ge 7 ]; then
        echo "have $name"; return   # all 6 epochs written
    fi
    rm -rf "${RUNS:?}/$name"
    echo "run $name: $*"
    timeout 1800 horovodrun -np "$np" --gloo python -m prsgd.train "${COMMON[@]}" --run-id "$name" "$@"
}

# (a) the family on 4 workers, the same data, seed and budget of 48 local steps each
# (8 per epoch; Alg 3 here: 6 rounds, worker i makes 6 * I_i steps)
run 4 gradient_allreduce --algorithm gradient_allreduce
run 4 prsgd_I1          --algorithm prsgd --interval 1
run 4 prsgd_I4          --algorithm prsgd --interval 4
run 4 hier_S2_K2x2      --algorithm hier --group-size 2 --interval 2 --global-every 2
run 4 varying_2x        --algorithm varying --epoch-lengths 2,4 --epoch-growth 2
run 4 post_local_E1_I8  --algorithm post_local --local-epochs 1 --interval 8
run 4 one_shot          --algorithm one_shot
run 4 hetero_1248       --algorithm hetero --worker-intervals 1,2,4,8

# (b) 2 workers, worker 1 slowed 2x: Algorithm 1 (I = 4) waits for it; Algorithm 3 gets a
# wall-clock budget per round equal to Algorithm 1's measured mean round time.
run 2 slow_alg1_I4 --algorithm prsgd --interval 4 --slowdown 1,2
BUDGET=$(python - "$RUNS/slow_alg1_I4/metrics.csv" <<'PY'
import sys, pandas as pd
last = pd.read_csv(sys.argv[1]).iloc[-1]
print(f"{last.train_seconds / last.rounds:.3f}")
PY
)
run 2 slow_alg3_budget --algorithm hetero --interval 4 --round-budget-s "$BUDGET" --slowdown 1,2

# K-AVG is Algorithm 1 under its own name: the same curve (last, as it adds nothing new)
run 4 kavg_K4 --algorithm kavg --interval 4

python -m prsgd.plots.family "$OUT"
