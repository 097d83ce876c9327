#!/usr/bin/env bash
# The device command of a GPU lease after the campaign (notes/README.md, "After the campaign"):
# what the first H200 campaign left open, most telling first, each result written to $OUT as it
# comes. About 420 s (the device tool's timeout_s 480: a 15-minute lease keeps time for a second
# try): the tests take what is left of 420 s; the steps before them are capped at 455 s together,
# should every one of them run to its cap. Needs $OUT and, where the copy has no git history,
# TRITON_CONV_COMMIT.
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
#   6. gpu_tests.log       the test suite on the GPU (8 workers), stopped at the time left
set -uo pipefail
cd "$(dirname "$0")/.."
# The defaults, untuned: the configs of a shape never tuned, as the campaign runs; tuning every
# shape of the step in the first call would spend the lease in the compiler.
export PYTHONPATH=. PYTHONUNBUFFERED=1 TRITON_CONV_AUTOTUNE=0
start=$(date +%s)
left() { echo $((420 - ($(date +%s) - start))); }

{
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
    python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
    for shape in 32,256,14,14,256,3 1,64,56,56,64,3; do
        timeout -k 5 40 python3 bench/host_overhead.py --dtype bf16 --calls 500 --shape "$shape"
    done
} > "$OUT/host_overhead.txt" 2>&1
echo "host overhead done at $(($(date +%s) - start)) s"
timeout -k 5 70 python3 bench/since_campaign.py --budget-s 50 --out "$OUT/since_campaign.txt" > "$OUT/training.log" 2>&1
status=$?
echo "since-campaign timings done at $(($(date +%s) - start)) s (exit $status)"

training=(--steps 13 --warmup 3 --batch 32 --dtype bf16)
# The first run compiles every kernel variant of the step (Triton's cache serves the second).
timeout -k 5 150 python3 -m triton_conv.training_check "${training[@]}" \
    --out "$OUT/training-eager.json" >> "$OUT/training.log" 2>&1
echo "eager training done at $(($(date +%s) - start)) s"
timeout -k 5 60 python3 bench/profile_step.py --batch 32 --steps 3 --warmup 2 --dtype bf16 \
    --out "$OUT/profile_step.txt" >> "$OUT/training.log" 2>&1
echo "profile done at $(($(date +%s) - start)) s"
timeout -k 5 95 python3 -m triton_conv.training_check "${training[@]}" --cuda-graph \
    --out "$OUT/training-graphed.json" >> "$OUT/training.log" 2>&1
echo "graphed training done at $(($(date +%s) - start)) s"

if [ "$(left)" -gt 30 ]; then
    workers=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8 --dist loadfile")
    timeout -k 10 -s INT "$(left)" python3 -m pytest tests -q -p no:cacheprovider -rfE $workers > "$OUT/gpu_tests.log" 2>&1
fi
echo "tests done at $(($(date +%s) - start)) s"
tail -n 3 "$OUT/gpu_tests.log" 2>/dev/null
grep -h "speed_ratio" -A1 "$OUT/training.log" 2>/dev/null
exit 0
