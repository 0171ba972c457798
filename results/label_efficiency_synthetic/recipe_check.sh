#!/bin/bash
# Recipe check (is the study's scratch arm step-limited or size-limited?): 5 % labels, seed 0, lr 1e-3.
COMMON="--dataset synthetic --device auto --num_workers 0 --no_progress --crop_size 16 --use_pad_mask --train_folds 1 2 3 --val_folds 5 --test_folds 4 --label_subset ratio --label_ratio 0.05 --seed 0 --lr 1e-3 --batch_size 8 --val_limit 32 --test_limit 100 --eval_batch_size 16 --n_maps 0"
export OMP_NUM_THREADS=1
# 4x the study's steps (32 epochs = 608 steps), tiny
python PASTIS/finetuning_STCLN.py $COMMON --preset tiny --epochs 32 --val_every 4 --save_every 32 --output_dir checkpoints/recipe_check/tiny_608steps > checkpoints/recipe_check/tiny_608steps.log 2>&1
# the small preset (131k parameters) on the study's schedule (8 epochs = 152 steps)
python PASTIS/finetuning_STCLN.py $COMMON --preset small --epochs 8 --val_every 2 --save_every 8 --output_dir checkpoints/recipe_check/small_152steps > checkpoints/recipe_check/small_152steps.log 2>&1
