#!/usr/bin/env bash
# The second device command of a GPU lease after the campaign (notes/README.md, "After the
# campaign"; the first is scripts/gpu_tests.sh): what the first H200 campaign left open, most
# telling first, each result written to $OUT as it comes. Its steps share TRITON_CONV_BUDGET_S
# (default 420; the device tool's timeout_s 30 more): each runs to its own cap or to the time left,
# whichever is less, and one with under 15 s left is skipped. Needs $OUT and, where the copy has no
# git history, TRITON_CONV_COMMIT. Its timings compare with the H200 campaign's only on an H200
# (the device tool's kind nvidia-h200); on another GPU read them against their controls.
#   1. host_overhead.txt   each pass's host time per call with real launches, Triton's launch alone,
#                          the compiled kernel's own runner (the JIT's binding left out), an empty
#                          Triton kernel and a torch op, and the kernel's device time
#                          (bench/host_overhead.py), at N=32 and N=1
#   2. since_campaign.txt  the kernel changes since the campaign, at the campaign's configs: dgrad's
#                          spread zero run (fprop at the same config the control) and split-K's
#                          two-level sum at 16, 32 and 64 splits (8 the control); each checked
#                          against torch, then timed beside the campaign's times of the same
#                          configs (bench/since_campaign.py; .json beside it)
#   3. training-eager.json the ResNet-50 step eagerly at this commit (the campaign's ran before the
#                          host path's fixes); run before 4 and 5: it compiles every kernel
#                          variant of the step into Triton's cache on the known path
#   4. profile_step.txt    torch.profiler's and cProfile's tables of three eager steps of the
#                          converted model (bench/profile_step.py): where the host's time goes
#   5. training-graphed.json  the same step captured once and replayed, torch's and ours
#                          (training_check --cuda-graph): the host's time taken out of both
set -uo pipefail
cd "$(dirname "$0")/.."
# The defaults, untuned: the configs of a shape never tuned, as the campaign runs; tuning every
# shape of the step in the first call would spend the lease in the compiler.
export PYTHONPATH=. PYTHONUNBUFFERED=1 TRITON_CONV_AUTOTUNE=0
budget=${TRITON_CONV_BUDGET_S:-420}
start=$(date +%s)
# A step's time limit: its cap, or the time left if that is less; 0 (skip it) under 15 s.
limit() {
    local left=$((budget - ($(date +%s) - start)))
    [ "$left" -lt "$1" ] && set -- "$left"
    [ "$1" -lt 15 ] && set -- 0
    echo "$1"
}
# Runs a step under its limit; a skipped step says so in its log.
step() {
    local cap=$1 log=$2
    shift 2
    local seconds
    seconds=$(limit "$cap")
    if [ "$seconds" -eq 0 ]; then
        echo "skipped: no time left in the budget of $budget s" >> "$log"
        return
    fi
    timeout -k 5 "$seconds" "$@" >> "$log" 2>&1
}

{
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} > "$OUT/host_overhead.txt" 2>&1
for shape in 32,256,14,14,256,3 1,64,56,56,64,3; do
    step 40 "$OUT/host_overhead.txt" python3 bench/host_overhead.py --dtype bf16 --calls 500 --shape "$shape"
done
echo "host overhead done at $(($(date +%s) - start)) s"
: > "$OUT/training.log"
step 70 "$OUT/training.log" python3 bench/since_campaign.py --budget-s 50 --out "$OUT/since_campaign.txt"
echo "since-campaign timings done at $(($(date +%s) - start)) s (exit $?)"

training=(--steps 13 --warmup 3 --batch 32 --dtype bf16)
# The first run compiles every kernel variant of the step (Triton's cache serves the second).
step 150 "$OUT/training.log" python3 -m triton_conv.training_check "${training[@]}" --out "$OUT/training-eager.json"
echo "eager training done at $(($(date +%s) - start)) s"
step 60 "$OUT/training.log" python3 bench/profile_step.py --batch 32 --steps 3 --warmup 2 --dtype bf16 \
    --out "$OUT/profile_step.txt"
echo "profile done at $(($(date +%s) - start)) s"
step 95 "$OUT/training.log" python3 -m triton_conv.training_check "${training[@]}" --cuda-graph \
    --out "$OUT/training-graphed.json"
echo "graphed training done at $(($(date +%s) - start)) s"
grep -h "speed_ratio" -A1 "$OUT/training.log" 2>/dev/null
exit 0
