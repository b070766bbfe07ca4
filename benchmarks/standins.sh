#!/usr/bin/env bash
# Issue 13's stand-in categories: generated data (no real category needed) that the bottle recipe has not seen.
#   grain    grey 128x96 (non-square) stochastic texture; subtle defects: hairline, faint blob, pit, torn edge
#   texture  grey 128x128 woven pattern; the subtle defects and a clear crack
#   surface  colour 128x128 brushed metal; all nine defect kinds at half size (small defects)
#   grain2   a second stochastic texture: colour 128x128, another seed, the subtle defects (added to check the
#            near-chance fallback of `ddad select --auto` on a category it was not designed on)
#   grain3   grey 128x128 grain, another seed; surface2  grey brushed metal, the subtle defects at half size
#            (both added before training, to check the blind-source fallback fitted after grain2's analysis)
#   grain4   grey 128x96 grain, another seed, the subtle defects at 3/4 size (added before training, to check the
#            fallback's finer memory layers, fitted after grain, grain2 and grain3's analysis)
# Each: DDAD (CONFIG, default configs/mvtec/bottle-cpu.yaml, at STEPS training steps) and PatchCore in one
# `ddad benchmark` table, then the per-defect-type metrics.
#   benchmarks/standins.sh OUT [STEPS] [CONFIG] [CATEGORY ...]
#   benchmarks/standins.sh runs/standins 800 configs/mvtec/bottle-cpu.yaml grain
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,15p "$0"; exit 2; }
out=$1 steps=${2:-800} cfg=${3:-configs/mvtec/bottle-cpu.yaml}; shift $(( $# < 3 ? $# : 3 ))
cats=("$@"); [ ${#cats[@]} -gt 0 ] || cats=(grain texture surface)
declare -A make=(
  [grain]="--category grain --gray --width 128 --height 96 --defects subtle --n-test-per-defect 10 --seed 11"
  [texture]="--category texture --gray --defects thin,faint,pit,fray,crack --n-test-per-defect 10 --seed 12"
  [surface]="--category surface --defects clear,subtle --defect-scale 0.5 --n-test-per-defect 6 --seed 13"
  [grain2]="--category grain --defects subtle --n-test-per-defect 10 --seed 14"
  [grain3]="--category grain --gray --defects subtle --n-test-per-defect 10 --seed 15"
  [surface2]="--category surface --gray --defects subtle --defect-scale 0.5 --n-test-per-defect 10 --seed 16"
  [grain4]="--category grain --gray --width 128 --height 96 --defects subtle --defect-scale 0.75 --n-test-per-defect 10 --seed 17"
)
declare -A height=([grain]=96 [texture]=128 [surface]=128 [grain2]=128 [grain3]=128 [surface2]=128 [grain4]=96)
for c in "${cats[@]}"; do
  if [ ! -d "$out/data/$c" ]; then  # made in a folder of its own, then named after the stand-in (grain2 is a grain)
    ddad synth --out "$out/data/.$c" ${make[$c]} --n-train 120 --n-test-good 20
    mv "$out/data/.$c"/* "$out/data/$c" && rmdir "$out/data/.$c"
  fi
  ddad benchmark --config "$cfg" --methods ddad,patchcore --steps 10,5 --data "$out/data/$c" \
    --set "data.image_height=${height[$c]}" --set "train.steps=$steps" --out "$out/$c" --reuse | grep -v '^INFO'
  python benchmarks/per_defect.py "$out/$c/ddad/eval-ddad10" "$out/$c/patchcore" --names DDAD-10,PatchCore
done
