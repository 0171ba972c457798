#!/bin/sh
# The label-efficiency grid reported in README.md (run from the repository root).
# pretrain_cell/ and pretrain_block/ and the 5 % runs at lr 3e-3 of scratch (seeds 1, 2), wp_cell, wp_block, probe_wp,
# probe_random (seeds 1, 2), rf and majority were copied from the earlier 5 %-only run (same command and code
# path: scratch b5_s0 re-run here reproduced its losses and test mIoU bit for bit).
OMP_NUM_THREADS=1 python -m experiments.label_efficiency --budgets 1 5 --sweep_budget 5 --seeds 3 \
    --arms scratch wp_cell wp_block wp_frame probe_wp probe_random rf majority --lrs 3e-3 1e-2 \
    --steps 300 --min_epochs 1 --validations 4 --val_limit 32 --test_limit 100 --pretrain_epochs 2 --jobs 2 \
    --output_dir checkpoints/label_efficiency_grid
