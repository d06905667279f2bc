#!/bin/bash
# Train every family member and an FCN control on CamVid under one budget (issue 25 item 5):
# each recipe for MINUTES (default 20) on ONE CPU thread, two runs at a time on the 2-core
# machine, validation only at the end; then benchmarks/camvid_family.py scores and times them.
# Usage: bash benchmarks/camvid_family_train.sh DATA_ROOT OUT_DIR [MINUTES]
set -euo pipefail
data_root=${1:?camvid data root, e.g. ../shared/data/camvid}
out=${2:?folder for the runs, e.g. runs/family}
minutes=${3:-20}
fcnseg=${FCNSEG:-.venv/bin/fcnseg}
mkdir -p "$out"

train_one() {  # name -> one run; the FCN control is the shipped model's stage-1 recipe
  local name=$1 config extra=()
  if [ "$name" = fcn4s_lite0 ]; then
    config=configs/camvid_fcn4s_lite0.yaml
    extra=(train.schedule_span=budget)
  else
    config=configs/camvid_$name.yaml
  fi
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$fcnseg" train --config "$config" --data-root "$data_root" \
    --out "$out/$name" "train.max_minutes=$minutes" train.val_every=0 "${extra[@]}" \
    > "$out/$name.log" 2>&1
}

chain() { for name in "$@"; do train_one "$name"; done; }

chain segnet_basic segnet_vgg16 unet_lite0 linknet_lite0 &
chain bayesian_segnet_basic enet pspnet_lite0 fcn4s_lite0 &
wait
echo "runs in $out; score and time them with benchmarks/camvid_family.py (see RESULTS.md)"
