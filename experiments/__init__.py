"""One command per paper experiment (and the demo). Run from the repository root:

    python -m experiments.demo
    python -m experiments.table1_mtlcc2017 --data_root data/MTLCC
    python -m experiments.early_season --data_root data/MTLCC
    python -m experiments.label_limited --dataset pastis --data_root data/PASTIS

Every experiment takes --smoke (tiny model, synthetic data, one epoch) so CI runs it end to end.
"""
