#!/bin/bash
# GPU check 2: the block and frame pretexts pre-trained exactly as the cell one of results/gpu_check/gpu_check.sh part 3 (the
# study's pre-training arguments, tiny, seed 0, bf16 + --fast_dropout, 35 epochs), so that the three masking modes
# can be fine-tuned from backbones of the same pre-training budget (results/label_efficiency_synthetic/commands.sh, command 15).
# Written down before it ran; whatever comes out is reported. The session had 453 s of device time left: both run
# side by side, each writes its checkpoints straight under $OUT, so the epochs done come back even if the box ends.
# Usage: OUT=dir bash results/gpu_check/gpu_check2.sh          (the device tool sets OUT)
#        OUT=dir DEV=cpu EPOCHS=1 bash results/gpu_check/gpu_check2.sh  (dry run on CPU)
set -u
OUT=${OUT:?set OUT}
DEV=${DEV:-cuda}
EPOCHS=${EPOCHS:-35}
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
for mode in block frame; do
    python3 pretrain_STCLN.py "${PT[@]}" --mask_mode $mode --output_dir "$OUT/${mode}_tiny" > "$OUT/pretext_$mode.log" 2>&1 &
done
wait
echo "done after $((SECONDS - start)) s" >> "$OUT/env.log"
# (Ran 2026-12-04 16:18-16:24 UTC, 361 s on one H200 (torch 2.11.0+cu130), code of the commit that added the .whl
#  install above: a first call without it failed at once on the missing crc32c package. Both runs reached epoch 35
#  and exited 0; their logs are in results/gpu_check/gpu_check2/. The exports did NOT come back: the device tool returns at most 8
#  files from $OUT and the runs had written 35 exports each there, so the first files in name order came back
#  (checkpoint_0..12 of block) and checkpoint_34 of neither; the session's device time was spent (16 s left), so
#  command 15 could not run. Next time: write the runs outside $OUT and copy the last export in.)
