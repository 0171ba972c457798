#!/bin/bash
# GPU check 3: results/gpu_check/gpu_check2.sh again, made so that its backbones come back. The block and frame pretexts are
# pre-trained exactly as the cell one of results/gpu_check/gpu_check.sh part 3 (the study's pre-training arguments, tiny, seed 0,
# bf16 + --fast_dropout, 35 epochs), side by side, for command 15 of results/label_efficiency_synthetic/commands.sh (the three masking
# modes fine-tuned from backbones of the same pre-training budget, on the CPU). gpu_check2.sh wrote its 35 exports
# per run straight under $OUT and the device tool returns at most 8 files, so its last exports were lost. Here the
# runs write outside $OUT, each under its own time box, and only their last export and the logs are copied in
# (5 files), also when a box ends first (then the epoch reached is in the file name, and command 15 says so).
# Written down before it ran; whatever comes out is reported.
# Usage: OUT=dir bash results/gpu_check/gpu_check3.sh                     (the device tool sets OUT; timeout_s 560 leaves room)
#        OUT=dir DEV=cpu EPOCHS=2 EXTRA=--smoke bash results/gpu_check/gpu_check3.sh   (dry run of the file handling on a CPU)
set -u
OUT=${OUT:?set OUT}
DEV=${DEV:-cuda}
EPOCHS=${EPOCHS:-35}
BOX=${BOX:-420}  # seconds per pre-training; gpu_check2.sh's 35 epochs took 266 s side by side on one H200
EXTRA=${EXTRA:-}
WORK=${WORK:-/tmp/gpu_check3}
export PYTHONUNBUFFERED=1
start=$SECONDS
if [ -d .whl ]; then  # packages the GPU image lacks (crc32c, imported by utils.data)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
{ nvidia-smi -L 2>&1; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > "$OUT/env.log"
# the study's PASTIS-format v2 set (the same generator and parameters as results/gpu_check/gpu_check.sh)
python3 -c "from utils.data import SYNTHETIC_PASTIS, CACHE_ROOT; from utils.datasets import build_pastis_synthetic; \
build_pastis_synthetic(CACHE_ROOT / 'synthetic_pastis_v2_full', version=2, **SYNTHETIC_PASTIS[2]['full'])" >> "$OUT/env.log" 2>&1
echo "data written after $((SECONDS - start)) s" >> "$OUT/env.log"
PT=(--dataset synthetic --device "$DEV" --num_workers 3 --no_progress --crop_size 16 --use_pad_mask --amp
    --fast_dropout --folds 1 2 3 5 --epochs "$EPOCHS" --lr 1e-3 --batch_size 16 --seed 0 --save_every 1 --preset tiny)
rm -rf "$WORK"
for mode in block frame; do
    # shellcheck disable=SC2086  # EXTRA is a list of flags
    timeout "$BOX" python3 pretrain_STCLN.py "${PT[@]}" $EXTRA --mask_mode $mode --output_dir "$WORK/${mode}_tiny" \
        > "$OUT/pretext_$mode.log" 2>&1 &
done
wait
echo "pre-training ended after $((SECONDS - start)) s" >> "$OUT/env.log"
for mode in block frame; do  # the last export each run reached, and nothing else
    last=$(ls "$WORK/${mode}_tiny" 2>/dev/null | grep '^checkpoint_[0-9]*\.stcln\.tar$' | sort -V | tail -1)
    if [ -n "$last" ]; then
        cp "$WORK/${mode}_tiny/$last" "$OUT/${mode}_tiny_$last"
        echo "$mode: copied $last" >> "$OUT/env.log"
    else
        echo "$mode: no export was written" >> "$OUT/env.log"
    fi
done
