#!/usr/bin/env bash
# Behaviour parity of the "one path from image to labels" redesign (issue 21): eval JSONs of both
# shipped CamVid models on CamVid val with the torch and onnxruntime engines, and predictions
# for 10 val images, written under OUT. Run it on the commit before and after, then compare:
#   bash benchmarks/redesign_parity.sh OUT_BEFORE   (on the old commit)
#   bash benchmarks/redesign_parity.sh OUT_AFTER
#   python benchmarks/redesign_parity_compare.py OUT_BEFORE OUT_AFTER
set -euo pipefail
out="$1"
data="${2:-../shared/data/camvid}"
py="${PYTHON:-.venv/bin/python}"
fcnseg() { "$py" -c 'import sys; from fcnseg.cli import main; sys.exit(main())' "$@"; }
mkdir -p "$out"
images=$(ls "$data"/val/*.png | head -10)
for model in camvid_fcn4s_lite0 camvid_fcn4s_lite0_fast; do
    for engine in torch onnxruntime; do
        fcnseg eval --weights "weights/$model.safetensors" --data-root "$data" --split val \
            --engine "$engine" --out "$out/eval-$model-$engine.json" > "$out/eval-$model-$engine.log" 2>&1
    done
    # shellcheck disable=SC2086
    fcnseg predict --weights "weights/$model.safetensors" $images --out "$out/predict-$model" \
        > "$out/predict-$model.log" 2>&1
done
echo "parity outputs in $out"
