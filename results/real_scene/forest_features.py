"""The random-forest anchor on the real scene with the features it had before and after issue 34.

    python results/real_scene/forest_features.py --data_root checkpoints/slovenia --seeds 100 --budget 25

Before: NDVI interpolated every 15 days on days 0..365 only (for a 2015-2017 series: its first half
year) over every date, cloudy ones included. After: the grid spans the whole series, and each
pixel is interpolated between its clear dates only (the study's `rf` arm now). Same labelled
pixels (the study's draw for each seed and test fold), same forest, same test folds.
"""

import argparse
import json

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from experiments import label_efficiency as study
from utils.finetune import class_weights
from utils.metrics import evaluate_protocol


def features(sample: dict, grid: np.ndarray, clouds: bool) -> np.ndarray:
    return study.pixel_features(sample if clouds else {k: v for k, v in sample.items() if k != "valid"}, grid)


def score(data, grid: np.ndarray, clouds: bool, seed: int) -> float:
    info = data.info
    weight = class_weights(info, info.num_classes).numpy()
    x, y = [], []
    for index in range(len(data.train)):
        sample = data.train[index]
        label = sample["label"].numpy().ravel()  # (H, W) -> (H*W,)
        keep = weight[label] > 0
        x.append(features(sample, grid, clouds)[keep])
        y.append(label[keep])
    model = RandomForestClassifier(study.RF_TREES, n_jobs=1, random_state=seed).fit(
        np.concatenate(x), np.concatenate(y)
    )
    matrix = np.zeros((info.num_classes, info.num_classes), dtype=np.int64)
    for index in range(len(data.test)):
        sample = data.test[index]
        truth = sample["label"].numpy().ravel()  # (H, W) -> (H*W,)
        pred = model.predict(features(sample, grid, clouds))
        keep = truth != info.ignore_index
        matrix += np.bincount(truth[keep] * info.num_classes + pred[keep], minlength=info.num_classes**2).reshape(
            info.num_classes, info.num_classes
        )
    return evaluate_protocol(matrix, info.protocols["stcln"], info.classes)["mIoU"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[100])
    parser.add_argument("--budget", type=float, default=25)
    cli = parser.parse_args()
    args = study.get_parser().parse_args(
        ["--dataset", "folder", "--data_root", cli.data_root, "--cv", "--preset", "small"]
    )
    args.cv_folds = study.data_folds(args)
    rows = {
        "days 0-365, every date (before)": (False, False),
        "whole series, every date": (True, False),
        "whole series, clear dates only (now)": (True, True),
    }
    results = {name: [] for name in rows}
    for seed in cli.seeds:
        for fold in study.rotations(args):
            data = study.labelled_data(args, cli.budget, seed, splits=("train", "test"), fold=fold)
            for name, (whole, clouds) in rows.items():
                grid = study.rf_grid(data.train) if whole else np.arange(0, 366, study.RF_DAY_STEP, dtype=np.float64)
                results[name].append(score(data, grid, clouds, seed))
    for name, values in results.items():
        print(
            f"| {name} | {np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} | {', '.join(f'{v:.3f}' for v in values)} |"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
