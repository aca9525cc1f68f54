#!/usr/bin/env bash
# One measured sweep on the lab (python -m prsgd.lab): real Horovod ranks on NODES network-namespace
# nodes over links shaped to RATE, launched by the sweep driver with horovodrun -H over ssh.
# Needs root. DATA: the sweep's --data (default auto: the shared JPEG copy beside the repository).
# Used by `make lab-figure3` and `make lab-validation` (see results/wallclock/README.md).
#
#   scripts/lab_sweep.sh OUT_DIR RATE INTERVALS REPEATS [-- TRAINING ARGS...]
#
# OUT_DIR/sweep       PR-SGD at each interval (runs I{I}-s{seed}; seed = repeat index)
# OUT_DIR/sweep-hier  Hier-AVG, one group per node (HIER_ARGS; skipped when HIER=0)
# VARIANTS (instead of those two): one sweep per line, "SUBDIR INTERVALS [TRAINING ARGS...]",
# e.g. "int8 1,4 --compressor int8" -> OUT_DIR/int8 (make lab-compression).
# OUT_DIR/lab.json    the lab's settings (link rate, burst, CPUs per node, ...)
# OUT_DIR/load.txt    the machine's load average every 5 s while the runs ran (a shared machine)
# Repeat r runs every variant once, in order, before repeat r+1: variants are interleaved in time,
# so a burst of load from elsewhere hits all of them alike.
set -euo pipefail
OUT=$1 RATE=$2 INTERVALS=$3 REPEATS=$4
shift 4
[ "${1:-}" = "--" ] && shift
PY=${PY:-python3}
NAME=${LAB_NAME:-wc}
NODES=${NODES:-2} SLOTS=${SLOTS:-2} CPUS=${CPUS_PER_NODE:-1}
BURST=${BURST:-64kb}
HIER=${HIER:-1}
HIER_INTERVAL=${HIER_INTERVAL:-4}
HIER_ARGS=${HIER_ARGS:-"--algorithm hier --group-size $SLOTS --global-every 4"}
if [ -z "${VARIANTS:-}" ]; then
    VARIANTS="sweep $INTERVALS"
    [ "$HIER" = 1 ] && VARIANTS+=$'\n'"sweep-hier $HIER_INTERVAL $HIER_ARGS"
fi
GLOO_TIMEOUT=${GLOO_TIMEOUT:-120}
NP=$((NODES * SLOTS))

lab() { local sub=$1; shift; "$PY" -m prsgd.lab "$sub" --name "$NAME" "$@"; }
mkdir -p "$OUT"
lab up --nodes "$NODES" --slots "$SLOTS" --cpus-per-node "$CPUS" --rate "$RATE" --burst "$BURST"
sampler=
cleanup() { [ -n "$sampler" ] && kill "$sampler" 2>/dev/null; lab down || true; }
trap cleanup EXIT
"$PY" - "$OUT/lab.json" "$NAME" <<'EOF'
import json, os, sys
from prsgd.lab.network import Lab, state_root
d = json.loads((state_root() / sys.argv[2] / "lab.json").read_text())
d.pop("sshd_pids", None)
d["machine_cpus"] = os.cpu_count()
open(sys.argv[1], "w").write(json.dumps(d, indent=2) + "\n")
EOF
( while :; do echo "$(date -u +%FT%TZ) $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 5; done ) \
    >> "$OUT/load.txt" &
sampler=$!
hosts=$(lab hosts)
calibrating() { [ -n "${CLOCK_SRC:-}" ] && [ -n "${CALIB_OUT:-}" ]; }
hvd=(horovodrun -np "$NP" -H "$hosts" --gloo --network-interface labnet
     --gloo-timeout-seconds "$GLOO_TIMEOUT")
launch=(ip netns exec "prsgd-$NAME-launch" env PYTHONPATH="${CLOCK_SRC:-}")
calibrate_compute() {   # OUT [more calibrate-compute flags]: one worker's step on every rank at once
    local out=$1; shift
    "${launch[@]}" "${hvd[@]}" "$PY" -m prsgd.clock calibrate-compute --batch-size 32 \
        --precision fp32 --steps "${CALIB_STEPS:-40}" "$@" --out "$out" \
        || echo "lab_sweep: calibrate-compute failed"
}
# The step time drifts on a shared machine (12 % within 5 minutes, results/codec-lab): the
# compute calibration brackets the runs, once before and once after, and uses the mean.
if calibrating; then
    mkdir -p "$(dirname "$CALIB_OUT")"
    echo "== compute calibration before the runs ($(date -u +%FT%TZ))"
    calibrate_compute "$CALIB_OUT-compute-before.json"
fi
failed=0      # a failed run is recorded in its manifest; the other runs go on
common=(--np "$NP" --hosts "$hosts" --network-interface labnet
        --gloo-timeout-seconds "$GLOO_TIMEOUT" --data "${DATA:-auto}")
for ((r = 0; r < REPEATS; r++)); do
    seeds=$(seq -s, 0 "$r")
    echo "== repeat $r ($(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg))"
    # fd 3: the runs (horovodrun, ssh) read stdin and would eat the list.
    while read -r -u 3 sub ints extra; do
        [ -n "$sub" ] || continue
        # shellcheck disable=SC2086  # extra: training arguments, split on spaces
        lab exec -- "$PY" scripts/sweep.py --out "$OUT/$sub" --intervals "$ints" \
            --seeds "$seeds" "${common[@]}" -- "$@" $extra || failed=1
    done 3<<< "$VARIANTS"
done
# Then the rest of the clock's calibration (prsgd.clock, when CLOCK_SRC holds it) on these very
# nodes and link: allreduce (and allgather) timings of several sizes at both levels, one
# worker's step under the same contention as training again, each compressor's encode/decode
# (CALIB_CODECS). Written to CALIB_OUT-network.json, CALIB_OUT-compute.json and, combined with
# CALIB_OUT-compute-before.json, CALIB_OUT.json (what prsgd.clock --clock and
# prsgd.clock.validate read).
if calibrating; then
    echo "== calibration ($(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg))"
    "${launch[@]}" "${hvd[@]}" "$PY" -m prsgd.clock calibrate-network --repeats 10 --allgather \
        --sizes "${CALIB_SIZES:-4096,65536,262144,1084392,2168784}" --note "lab $NAME: $NODES \
nodes x $SLOTS ranks, $CPUS CPU(s) per node, tc tbf rate $RATE burst $BURST latency 50ms on both \
ends of each node's veth (rate none: unshaped)" --out "$CALIB_OUT-network.json" \
        || { echo "lab_sweep: calibrate-network failed; fitting its points again with --flat-ok" \
             "(a level whose time does not grow with the size gets alpha only)"
             PYTHONPATH="$CLOCK_SRC" "$PY" -m prsgd.clock refit "$CALIB_OUT-network.json" \
                 --flat-ok --out "$CALIB_OUT-network.json" || echo "lab_sweep: refit failed"; }
    calibrate_compute "$CALIB_OUT-compute.json" --codecs "${CALIB_CODECS:-fp16,bf16,int8,topk:0.01}"
    PYTHONPATH="$CLOCK_SRC" "$PY" -m prsgd.clock combine --compute "$CALIB_OUT-compute.json" \
        --compute-also "$CALIB_OUT-compute-before.json" \
        --network "$CALIB_OUT-network.json" --out "$CALIB_OUT.json" \
        --name "lab $(basename "$CALIB_OUT" | sed 's/^lab-//') (measured: step + network)" \
        || echo "lab_sweep: combine failed"
fi
# Checkpoints are for resuming, not for the record.
find "$OUT" -name 'checkpoint.pt*' -delete
exit "$failed"
