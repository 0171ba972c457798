#!/usr/bin/env bash
# Issue 39, part 2: which samples to label next, selection strategies against random labels at equal label
# count (python -m experiments.label_efficiency --selection; docs/label_efficiency.md, "Which samples to
# label"). Every command behind results/selection/, in order, written down before its run (git log dates
# each step). The design below was fixed before any result of it existed.
set -euo pipefail
cd "$(dirname "$0")/../.."

# --- Design, fixed before any run ------------------------------------------------------------------------
# * Strategies: random (the baseline: nested random sets), kcenter, entropy, margin, badge, every one on the
#   same schedule of rounds, one round per budget. Round 0 = a uniform random draw of the smallest budget's
#   count, the same set for every strategy and arm (seeded by seed and test fold; kcenter: the k-center pick
#   on the cell-pre-trained backbone instead, it needs no label). Each later round adds the difference of
#   the counts, chosen with the model fine-tuned in the round before; every round fine-tunes from the arm's
#   initial weights on all labels so far. No class stratification (the candidates' classes are unknown).
# * Comparison: each strategy minus random at each budget, paired by unit (seed, or seed x test fold), 95 %
#   t interval; "beats random" = an interval above zero. With 4 strategies x 2 later budgets x 2 arms the
#   intervals are uncorrected: one of 16 excluding zero by chance is expected at about 55 % (1 - 0.95^16),
#   so a single such interval is read as a lead to replicate on new seeds, not as a finding.
# * The unit labelled: the study's training sample (the real scene: one 8-px patch; the synthetic set: a
#   16-px crop, 4 per patch). Counts: round(budget % x the training samples).
#
# Measured per-run time (the basis of every estimate below): the real scene, tiny preset, 100 steps, this
# recipe (--fast --drop_invalid --augment), 4 labelled patches: 61 s per fine-tune, one thread, while another
# study kept both cores busy (load 5); phase A2 of results/real_scene ran the same recipe at 33-38 s per run
# with --jobs 2. The small preset at 300 steps (phase B) took 2.3 min (9 patches) to 5 min (4 patches) per
# run with --jobs 2. --smoke --selection: about 8 s per run (1 epoch), 20 runs in 4 min.

# --- 1. The real scene (today's CPU hour) ------------------------------------------------------------------
# The folder converted by results/real_scene/commands.sh (144 8-px patches, folds 1-5, --cv: 5 rotations,
# about 36 training patches per rotation). Phase B's options (--drop_invalid, --augment, --fast, batch 8,
# 8 validations on the whole validation fold, lr 3e-3, 40 pre-training epochs on the scene's imagery),
# at the tiny preset and 100 steps (phase A2's recipe) for the CPU time: the small preset at 300 steps costs
# 4-8x per run. Budgets 10, 25, 50 % = 4, 9, 18 patches: 4 is phase B's 10 % count (its 5 % labels 2
# patches, too few for a first model whose scores the next round reads), each round about doubles the
# labels, and at 50 % half the pool is still left to choose from. Seeds 0-1 x 5 test folds = 10 units.
# Arms: wp_cell first (the issue: selection with the pre-trained backbone), scratch next in the same folder.
# The first command runs budgets 10 and 25 only: 10 units x (2 starts + 5 strategies x 1 round) = 70
# fine-tunes, 25-35 min with --jobs 2 at 40-60 s per run and slot, plus one tiny pre-training (40 epochs of
# 9 steps; not measured for the tiny preset: the small one took 12 min beside other runs, the tiny one is
# estimated at 4-6 min); selections: 36 patches per round, seconds. About 30-40 min: today's hour.
# The 50 % round then continues every chain in the same folder (budgets may be added above the largest):
# 50 more fine-tunes, 17-25 min; then the scratch arm, 120 fine-tunes, 40-60 min.
REAL="--dataset folder --data_root checkpoints/slovenia --cv --pretrain_scope scene --preset tiny --fast \
  --batch_size 8 --steps 100 --validations 8 --val_limit 0 --lrs 3e-3 --pretrain_epochs 40 --drop_invalid --augment \
  --selection random kcenter entropy margin badge --seeds 2 --jobs 2 --output_dir checkpoints/selection/real_scene_tiny"
python -m experiments.label_efficiency $REAL --budgets 10 25 --arms wp_cell
python -m experiments.label_efficiency $REAL --budgets 10 25 50 --arms wp_cell
python -m experiments.label_efficiency $REAL --budgets 10 25 50 --arms wp_cell scratch   # run 2026-12-05 20:17-21:29 (120 scratch fine-tunes, 72 min)
python -m experiments.label_efficiency $REAL --budgets 10 25 50 --arms wp_cell scratch --report
# then: cp checkpoints/selection/real_scene_tiny/{results.md,results.json,selection_curves.png} results/selection/real_scene_tiny/

# --- 2. The real scene, the full study (later: a GPU or several CPU sessions) --------------------------------
# Phase B's recipe unchanged (small preset, 300 steps) and its cell backbone copied in (the same pre-training
# options, so the folder's schedule matches and nothing is pre-trained again); 10 seeds x 5 folds = 50 units
# (the issue's 10 or more seeds), both arms: 2 x 50 x 12 = 1,200 fine-tunes at 2.3-5 min per run and slot,
# about 35 h on the 2-core CPU with --jobs 2. Seeds can be split over machines with --only_seeds.
FULL="--dataset folder --data_root checkpoints/slovenia --cv --pretrain_scope scene --preset small --fast \
  --batch_size 8 --steps 300 --validations 8 --val_limit 0 --lrs 3e-3 --pretrain_epochs 40 --drop_invalid --augment \
  --selection random kcenter entropy margin badge --budgets 10 25 50 --seeds 10 --arms wp_cell scratch --jobs 2 \
  --output_dir checkpoints/selection/real_scene"
if [ ! -d checkpoints/selection/real_scene/pretrain_cell ]; then
    mkdir -p checkpoints/selection/real_scene
    cp -r checkpoints/real_scene/B/pretrain_cell checkpoints/selection/real_scene/
fi
python -m experiments.label_efficiency $FULL
python -m experiments.label_efficiency $FULL --report

# --- 3. The embedded benchmark (later) ------------------------------------------------------------------------
# The synthetic set's fixed splits (labels from folds 1-3: 3,000 16-px crops; selection on fold 5; test on
# fold 4). Budgets 1, 2, 5 % = 30, 60, 150 crops (the label-efficiency study's, where pre-training helped at
# 1 %). Its recipe: tiny preset, 300 steps, 4 validations on 32 samples, 100 test samples, lr 3e-3 (the lr
# its sweep chose for scratch and wp_cell), the 35-epoch cell backbone copied in (as command gpu35 of
# results/label_efficiency_synthetic/commands.sh). 10 seeds, both arms: 2 x 10 x 12 = 240 fine-tunes at about
# 6 min per run and slot (that study's 900-step runs took about 19), about 12 h with --jobs 2, plus the
# selections, which run in the main process between the waves: a model-read round scores the 3,000 crops,
# measured at 201 s for kcenter on the 35-epoch backbone (one thread, loaded machine; entropy, margin and badge
# read a segmenter of the same size), x 160 model-read rounds (4 strategies x 2 rounds x 20 chains) = about
# 9 h at that rate, 2-4 h on idle cores: about 15 h in all on the 2-core CPU.
SYN="--dataset synthetic --preset tiny --steps 300 --min_epochs 1 --validations 4 --val_limit 32 --test_limit 100 \
  --lrs 3e-3 --pretrain_epochs 35 --selection random kcenter entropy margin badge --budgets 1 2 5 --seeds 10 \
  --arms wp_cell scratch --jobs 2 --output_dir checkpoints/selection/synthetic"
mkdir -p checkpoints/selection/synthetic/pretrain_cell
cp -n pretrained/stcln_tiny_cell_synthetic_v2_e35.tar checkpoints/selection/synthetic/pretrain_cell/checkpoint_34.stcln.tar
python -m experiments.label_efficiency $SYN
python -m experiments.label_efficiency $SYN --report

# Session of 2026-12-05: the first command of block 1 ran from the i39-study worktree (the same selection code as
# main), 17:47 to the end of its 70 runs; it was paused (SIGSTOP, 18:08-19:05) during its pre-training while the
# real-scene study took both cores, then resumed; nothing else changed. Then its report, and the copies:
#   python -m experiments.label_efficiency $REAL --budgets 10 25 --arms wp_cell --report
#   cp checkpoints/selection/real_scene_tiny/{results.md,results.json,selection_curves.png} results/selection/real_scene_tiny/
# 19:42: the second command of block 1 (the 50 % round of every chain, same folder), for the session's last
# 25 minutes; what finishes is reported, the rest resumes with the same command.
# 20:03: the 50 % round finished (50 runs, 19:41-20:03); report and copies as above.
