#!/bin/bash
# One arm of the math probe: a math-only LoRA SFT of the smol recipe's base (run 7's, DeepSeek tokens added) on
# 600 train items in FORMAT (probe.py), STEPS steps of 4 rows of 512 tokens, then the evaluator on the phrasing
# split (n=100) and the hand-written math items, thinking budget 256. Resumable: rerun the same command.
#   docs/runs/2026-12-07-math-probe/run.sh FORMAT [STEPS] [THREADS]
set -ex
FORMAT=$1
STEPS=${2:-60}
THREADS=${3:-2}
HERE=$(dirname "$0")
OUT=runs/probe-$FORMAT
mkdir -p "$OUT"
[ -e "$OUT/base" ] || ln -s /work/runs/smol7/base "$OUT/base"            # run 7's base stage: the same base for every arm
[ -e "$OUT/tokenizer" ] || ln -s /work/runs/smol7/tokenizer "$OUT/tokenizer"
python3 "$HERE/probe.py" "$FORMAT" sft --recipe smol --out "$OUT" --threads "$THREADS" \
  --set 'sft.mixture={math=600}' --set sft.steps="$STEPS" --set sft.warmup_steps=5 \
  --set sft.eval_every="$STEPS" --set sft.eval_rows=13 --set sft.checkpoint_every=10
nanoseek eval --model "$OUT/sft/adapter" --name "probe-$FORMAT" --out runs/eval-probe --no-progress \
  --concurrency 16 --samples 1 --suite math --split phrasing,handwritten --n 100 --budgets 256
