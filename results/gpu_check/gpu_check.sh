#!/bin/bash
# GPU check: everything this project has run on a GPU, in one call of one NVIDIA H200 (README "Multi-GPU and mixed
# precision", "Speed" and "The pretext ..."). Written down before it ran; whatever came out is reported.
#   1. the GPU path end to end on the --smoke data: torchrun (nccl, 1 process) of pre-training and PASTIS fine-tuning,
#      compiled with inductor under bf16 autocast, the test script on the best checkpoint, MTLCC fine-tune + test
#      (TF32, and --strict_fp32 --grad_checkpoint), whole-scene prediction, and the label-efficiency study's smoke run
#   2. python -m bench.gpu_step at paper size: eager fp32 / TF32 / bf16, then compiled bf16
#   3. the paper's cell pretext trained past the 10 CPU epochs of command 6 (results/label_efficiency_synthetic/commands.sh): the
#      study's pre-training arguments (tiny, and small), seed 0, bf16, for as many epochs as the time box allows,
#      to see whether the masked-cell MSE crosses the same-date neighbour mean (0.0076)
# Usage: OUT=dir bash results/gpu_check/gpu_check.sh          (the device tool sets OUT; logs and backbones land there)
#        OUT=dir DEV=cpu bash results/gpu_check/gpu_check.sh  (dry run of the script on CPU: tiny time boxes, aot_eager)
set -u
OUT=${OUT:?set OUT}
DEV=${DEV:-cuda}
W=${W:-/tmp/gpu_check}
PRETEXT_S=${PRETEXT_S:-240}
export PYTHONUNBUFFERED=1
rm -rf "$W" && mkdir -p "$W"
if [ -d .whl ]; then  # packages the GPU image lacks (crc32c, for the MTLCC TFRecords)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
if [ "$DEV" = cuda ]; then BACKEND=inductor; BENCH=(); else BACKEND=aot_eager; BENCH=(--device cpu --smoke); PRETEXT_S=20; fi
step() {  # step NAME COMMAND...: run, log, print the exit status
    local name=$1; shift
    local start=$SECONDS
    "$@" >> "$OUT/e2e.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc, $((SECONDS - start)) s" | tee -a "$OUT/e2e.log"
}
{ nvidia-smi 2>&1 | head -15; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > "$OUT/env.log"

# data of part 3 (the study's PASTIS-format v2 set), written while the benchmark runs
python3 -c "from utils.data import SYNTHETIC_PASTIS, CACHE_ROOT; from utils.datasets import build_pastis_synthetic; \
build_pastis_synthetic(CACHE_ROOT / 'synthetic_pastis_v2_full', version=2, **SYNTHETIC_PASTIS[2]['full'])" \
    > "$W/gen.log" 2>&1 &
GEN=$!

# 2. benchmark (alone on the GPU)
timeout 120 python3 -m bench.gpu_step "${BENCH[@]}" --compile off > "$OUT/bench.log" 2>&1; echo "exit $?" >> "$OUT/bench.log"
timeout 140 python3 -m bench.gpu_step "${BENCH[@]}" --precisions bf16 --compile on --loader_epochs 1 >> "$OUT/bench.log" 2>&1
echo "exit $?" >> "$OUT/bench.log"
wait $GEN; cat "$W/gen.log" >> "$OUT/env.log"

# 3. the cell pretext, two model sizes side by side on the GPU, in the background
PT=(--dataset synthetic --device "$DEV" --num_workers 3 --no_progress --crop_size 16 --use_pad_mask --amp
    --fast_dropout --folds 1 2 3 5 --mask_mode cell --epochs 200 --lr 1e-3 --batch_size 16 --seed 0 --save_every 1)
timeout "$PRETEXT_S" python3 pretrain_STCLN.py "${PT[@]}" --preset tiny --output_dir "$W/cell_tiny" \
    > "$OUT/pretext_tiny.log" 2>&1 &
PT_TINY=$!
timeout "$PRETEXT_S" python3 pretrain_STCLN.py "${PT[@]}" --preset small --output_dir "$W/cell_small" \
    > "$OUT/pretext_small.log" 2>&1 &
PT_SMALL=$!

# 1. the GPU path end to end (smoke data), next to part 3
S=(--dataset synthetic --smoke --device "$DEV" --num_workers 0 --no_progress)
RUN=(python3 -m torch.distributed.run --standalone --nproc_per_node 1)
step "torchrun pretrain, bf16, compiled" "${RUN[@]}" pretrain_STCLN.py "${S[@]}" --amp --compile \
    --compile_backend $BACKEND --epochs 2 --output_dir "$W/pt"
step "torchrun PASTIS fine-tune from it, bf16, compiled" "${RUN[@]}" PASTIS/finetuning_STCLN.py "${S[@]}" --amp \
    --compile --compile_backend $BACKEND --epochs 2 --pretrain_pth "$W/pt/checkpoint_1.stcln.tar" --output_dir "$W/ft"
step "PASTIS test of best.tar" python3 PASTIS/test_STCLN.py "${S[@]}" --checkpoint "$W/ft/best.tar" \
    --output_dir "$W/ft_test"
step "MTLCC fine-tune, TF32" python3 MTLCC/finetuning_STCLN.py "${S[@]}" --epochs 2 --output_dir "$W/mt"
step "MTLCC test" python3 MTLCC/test_STCLN.py "${S[@]}" --checkpoint "$W/mt/best.tar" --output_dir "$W/mt_test"
step "PASTIS fine-tune, --strict_fp32 --grad_checkpoint" python3 PASTIS/finetuning_STCLN.py "${S[@]}" --strict_fp32 \
    --grad_checkpoint --epochs 1 --output_dir "$W/ft_fp32"
python3 -c "import numpy as np; np.save('$W/cube.npy', (np.random.default_rng(0).random((7, 10, 40, 52)) * 3000).astype('float32'))"
printf '2019-%02d-15\n' 3 4 5 6 7 8 9 > "$W/dates.txt"
step "predict a 40x52 scene" python3 predict_STCLN.py --checkpoint "$W/ft/best.tar" --cube "$W/cube.npy" \
    --dates "$W/dates.txt" --device "$DEV" --output_dir "$W/map"
step "label-efficiency study, smoke, --fast" python3 -m experiments.label_efficiency --smoke --device "$DEV" --fast \
    --output_dir "$W/study"
cp "$W/study/results.md" "$OUT/study_smoke_results.md" 2>/dev/null

wait $PT_TINY; echo "exit $?" >> "$OUT/pretext_tiny.log"
wait $PT_SMALL; echo "exit $?" >> "$OUT/pretext_small.log"
for size in tiny small; do  # the last backbone export of each pretext run
    last=$(ls "$W/cell_$size" 2>/dev/null | grep '^checkpoint_.*\.stcln\.tar$' | sort -V | tail -1)
    [ -n "$last" ] && cp "$W/cell_$size/$last" "$OUT/cell_${size}_$last"
done
ls "$OUT"
# (Ran once, 2026-12-04 13:32-13:38 UTC, 373 s on one H200 (torch 2.11.0+cu130, driver 580.159.04), code of ff2cfed;
#  outputs in results/gpu_check/gpu_check/. Part 1: all eight steps exit 0 (e2e.log). Part 2: bench.log; the eager run took about
#  80 s, the compiled one about 100 s. Part 3: 35 epochs (tiny) and 34 (small) in the 240 s box; both ended with
#  "stopped by SIGTERM" and then a "DataLoader worker ... is killed by signal: Terminated" traceback: `timeout`
#  signals the whole group, a bug fixed afterwards in utils/signals.py. A second call, to pre-train block and frame
#  for 35 epochs as well, was refused (no machine lent for the rest of the session).)
