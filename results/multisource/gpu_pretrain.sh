#!/bin/bash
# The two 35-epoch pre-trainings of the multi-source study (results/multisource/commands.sh, amendment of 2026-12-06),
# on a GPU: the wp_cell backbones of the S2 folder and of the S2+S1 late folder, with exactly the pre-training
# arguments the study passes (experiments/label_efficiency: tiny, cell masking, --positions doy, Adam 1e-3 constant,
# batch 16, folds 1 2 3 5, seed 0, bf16 + --fast_dropout), side by side, each under its own time box. On this CPU
# they would take about 3 h and 12 h. Only the last export, config.json and log of each come back (6 files + env.log:
# the device tool returns few files), also when a box ends first (the epoch reached is then in the file name).
# Written down before it ran; whatever comes out is reported in results/multisource/README.md.
#
# Usage: OUT=dir bash results/multisource/gpu_pretrain.sh          (the device tool sets OUT; timeout_s 580 leaves room)
#        OUT=dir DEV=cpu EPOCHS=2 EXTRA=--smoke bash results/multisource/gpu_pretrain.sh   (dry run on a CPU)
# The GPU image lacked crc32c before: `pip download crc32c --no-deps -d .whl` here first, and give the device call
# carry [".whl"] (installed below when present).
# Afterwards, on the CPU machine, for each folder F in s2 s2s1_late (the study then takes it as its backbone):
#        cp <files_at>/F_checkpoint_34.stcln.tar checkpoints/multisource/F/pretrain_cell/checkpoint_34.stcln.tar
# (the S2 folder's partial CPU pre-training in pretrain_cell/ is set aside first: mv it to pretrain_cell_cpu_partial/).
set -u
OUT=${OUT:?set OUT}
DEV=${DEV:-cuda}
EPOCHS=${EPOCHS:-35}
BOX=${BOX:-480}  # seconds per pre-training (results/gpu_check: 35 S2 epochs of this model took 266 s on one H200)
EXTRA=${EXTRA:-}
WORK=${WORK:-/tmp/ms_gpu_pretrain}
export PYTHONUNBUFFERED=1
start=$SECONDS
if [ -d .whl ]; then  # packages the GPU image may lack (crc32c, imported by utils.data)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
{ nvidia-smi -L 2>&1; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > "$OUT/env.log"
# the study's data (synthetic v2, with its Sentinel-1 series), written once before both runs read it
SMOKE=False
[ -n "$EXTRA" ] && SMOKE=True  # the dry run: the smoke set
python3 -c "from utils.data import pastis_root; from utils.data_spec import DataSpec; \
print(pastis_root(DataSpec(dataset='synthetic', smoke=$SMOKE, sources=('S2', 'S1A', 'S1D'))))" >> "$OUT/env.log" 2>&1
echo "data written after $((SECONDS - start)) s" >> "$OUT/env.log"
PT=(--dataset synthetic --device "$DEV" --num_workers 3 --no_progress --preset tiny --crop_size 16 --use_pad_mask --amp
    --fast_dropout --positions doy --folds 1 2 3 5 --mask_mode cell --epochs "$EPOCHS" --lr 0.001 --batch_size 16
    --seed 0 --save_every 1)
declare -A SOURCES=([s2]="" [s2s1_late]="--sources S2 S1 --fusion late")
rm -rf "$WORK"
for folder in s2 s2s1_late; do
    # shellcheck disable=SC2086  # EXTRA and the sources are lists of flags
    timeout "$BOX" python3 pretrain_STCLN.py "${PT[@]}" ${SOURCES[$folder]} $EXTRA --output_dir "$WORK/$folder" \
        > "$OUT/${folder}_pretrain.log" 2>&1 &
done
wait
echo "pre-training ended after $((SECONDS - start)) s" >> "$OUT/env.log"
for folder in s2 s2s1_late; do  # the last export each run reached, its config, and nothing else
    last=$(ls "$WORK/$folder" 2>/dev/null | grep '^checkpoint_[0-9]*\.stcln\.tar$' | sort -V | tail -1)
    if [ -n "$last" ]; then
        cp "$WORK/$folder/$last" "$OUT/${folder}_$last"
        cp "$WORK/$folder/config.json" "$OUT/${folder}_config.json"
        echo "$folder: copied $last" >> "$OUT/env.log"
    else
        echo "$folder: no export was written" >> "$OUT/env.log"
    fi
done
