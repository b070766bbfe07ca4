#!/usr/bin/env bash
# Training-steps ablation (reads test labels: analysis only). Trains one model and, at each milestone, copies it,
# adapts the copy and evaluates DDAD on the test set; training continues from the checkpoint (exact resume).
#   benchmarks/train_steps.sh CONFIG DATA OUT DEVICE STEP [STEP ...] [-- --set key=value ...]
#   benchmarks/train_steps.sh configs/mvtec/bottle-cpu.yaml ../shared/data/mvtec_bottle_256/bottle runs/steps cuda 2500 5000 7500
set -euo pipefail
[ $# -ge 5 ] || { sed -n 2,5p "$0"; exit 2; }
cfg=$1 data=$2 out=$3 dev=$4; shift 4
steps=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do steps+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
for s in "${steps[@]}"; do
  resume=(); [ -f "$out/run/checkpoints/last.json" ] && resume=(--resume)
  ddad train --config "$cfg" --set "data.root=$data" "$@" --set "train.steps=$s" --device "$dev" --out "$out/run" \
    "${resume[@]}" >/dev/null
  rm -rf "$out/m$s"; cp -r "$out/run" "$out/m$s"; rm -rf "$out/m$s/checkpoints"
  ddad adapt --model "$out/m$s" --device "$dev" >/dev/null
  echo "## $s steps"
  ddad evaluate --model "$out/m$s" --device "$dev" --out "$out/m$s/eval" | grep '^|'
done
