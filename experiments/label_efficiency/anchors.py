"""The non-learned anchors: a per-pixel random forest and the majority class on the same labelled pixels."""

import json
import logging
import os
from pathlib import Path

import numpy as np

from experiments.label_efficiency.design import fold_suffix, labelled_data, unit_fold

log = logging.getLogger("stcln")


RF_MAX_PIXELS = 50_000  # labelled pixels the forest trains on at most (random, seeded)


RF_DAY_STEP = 15  # features: every band linearly interpolated every 15 days of the season


RF_TREES = 100


def rf_grid(dataset) -> np.ndarray:
    """The forest's feature days: every RF_DAY_STEP days from day 0 to the last acquisition of the
    training samples (at least one year: the grid of a one-season data set is 0..365 as always)."""
    last = max(int(days.max()) for index in range(len(dataset)) for days in source_days(dataset[index]))
    return np.arange(0, max(366, last + 1), RF_DAY_STEP, dtype=np.float64)


def source_days(sample: dict) -> list:
    """The ``days`` of every source of a sample: the primary's, then each further source's ``days_<s>``."""
    return [sample["days"]] + [sample[key] for key in sample if key.startswith("days_")]


def sample_features(sample: dict, grid: np.ndarray) -> np.ndarray:
    """(H*W, F) features of every source of a sample: :func:`pixel_features` of the primary, then of
    each further source ``image_<s>`` on its own days (radar: no cloud mask), side by side."""
    parts = [pixel_features(sample, grid)]
    for key in [key for key in sample if key.startswith("image_")]:
        source = key.removeprefix("image_")
        parts.append(pixel_features({"image": sample[key], "days": sample[f"days_{source}"]}, grid))
    return np.concatenate(parts, axis=1)  # (H*W, G*C) per source -> (H*W, sum of G*C_s)


def pixel_features(sample: dict, grid: np.ndarray) -> np.ndarray:
    """(T, C, H, W) normalised series with its days -> (H*W, C*G) band values every RF_DAY_STEP days.

    A sample with per-cell validity (cloud masks) is interpolated, pixel by pixel, between its clear
    dates only (a pixel never clear: all dates), as remote-sensing practice does before a forest."""
    if "valid" in sample:
        return clear_pixel_features(sample, grid)
    image, days = sample["image"].numpy(), sample["days"].numpy().astype(np.float64)
    T, C, H, W = image.shape
    right = np.clip(np.searchsorted(days, grid), 1, max(T - 1, 1))  # (G,) first date >= grid day
    left = right - 1
    span = np.maximum(days[right] - days[left], 1e-9) if T > 1 else np.ones_like(grid)
    weight = np.clip((grid - days[left]) / span, 0.0, 1.0)[:, None, None, None]  # (G,) -> (G, 1, 1, 1), flat ends
    values = image[left] * (1 - weight) + image[right] * weight  # (G, C, H, W)
    return values.reshape(len(grid) * C, H * W).T  # (G, C, H, W) -> (G*C, H*W) -> (H*W, G*C)


def clear_pixel_features(sample: dict, grid: np.ndarray) -> np.ndarray:
    """:func:`pixel_features` of a sample with ``valid`` (T, H, W): linear in the day between each
    pixel's clear dates, flat beyond the first and last ones."""
    image, days = sample["image"].numpy().astype(np.float64), sample["days"].numpy().astype(np.float64)
    valid = sample["valid"].numpy()
    T, C, H, W = image.shape
    series = image.reshape(T, C, H * W)  # (T, C, H, W) -> (T, C, HW)
    clear = valid.reshape(T, H * W)  # (T, H, W) -> (T, HW)
    out = np.empty((H * W, len(grid) * C))
    for pixel in range(H * W):
        dates = clear[:, pixel] if clear[:, pixel].any() else np.ones(T, dtype=bool)
        values = [np.interp(grid, days[dates], series[dates, band, pixel]) for band in range(C)]  # C x (G,)
        out[pixel] = np.stack(values, axis=1).ravel()  # (G, C) -> (G*C,), the order of pixel_features
    return out


def collect_pixels(dataset, grid: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features, labels = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        label = sample["label"].numpy().ravel()  # (H, W) -> (H*W,)
        keep = weight[label] > 0
        features.append(sample_features(sample, grid)[keep])
        labels.append(label[keep])
    return np.concatenate(features), np.concatenate(labels)


def rf_threads(args) -> int:
    """Cores of one job slot (all cores when runs go one at a time)."""
    return max(1, (os.cpu_count() or 1) // args.jobs)


def anchor_dir(args, arm: str, budget: float, seed: int, fold: int | None = None) -> Path:
    """Where an anchor's result at one budget and seed (and --cv test fold) is cached (its summary.json)."""
    return args.output_dir / "runs" / arm / f"b{budget:g}_s{seed}{fold_suffix(fold)}"


def anchor_done(args, arm: str, budget: float, seed: int, fold: int | None = None) -> bool:
    return (anchor_dir(args, arm, budget, seed, fold) / "summary.json").is_file()


def baselines(args, budget: float, seed: int, arms: list[str], fold: int | None = None) -> list[dict]:
    """rf / majority at one budget and seed (and --cv test fold), cached as
    <output_dir>/runs/<arm>/b<budget>_s<seed>[_f<fold>]/summary.json (test scores and confusion matrix)."""
    from sklearn.ensemble import RandomForestClassifier

    from utils.atomic import write_text_atomic
    from utils.finetune import class_weights, evenly_spaced
    from utils.metrics import evaluate_protocol

    pending = [arm for arm in arms if not anchor_done(args, arm, budget, seed, fold)]
    if pending:
        data = labelled_data(args, budget, seed, splits=("train", "test"), fold=fold)
        info = data.info
        weight = class_weights(info, info.num_classes).numpy()
        grid = rf_grid(data.train)
        x, y = collect_pixels(data.train, grid, weight)
        rng = np.random.default_rng(seed)
        if len(y) > RF_MAX_PIXELS:
            keep = np.sort(rng.choice(len(y), RF_MAX_PIXELS, replace=False))
            x, y = x[keep], y[keep]
        forest = (
            RandomForestClassifier(RF_TREES, n_jobs=rf_threads(args), random_state=seed).fit(x, y)
            if "rf" in pending
            else None
        )
        majority = int(np.bincount(y).argmax())
        matrices = {arm: np.zeros((info.num_classes, info.num_classes), dtype=np.int64) for arm in pending}
        test_set = evenly_spaced(data.test, args.test_limit)
        for index in range(len(test_set)):
            sample = test_set[index]
            truth = sample["label"].numpy().ravel()  # (H, W) -> (H*W,)
            predictions = {"majority": np.full_like(truth, majority)}
            if forest is not None:
                predictions["rf"] = forest.predict(sample_features(sample, grid))
            for arm in pending:
                keep = truth != info.ignore_index if info.ignore_index is not None else slice(None)
                matrices[arm] += np.bincount(
                    truth[keep] * info.num_classes + predictions[arm][keep], minlength=info.num_classes**2
                ).reshape(info.num_classes, info.num_classes)
        for arm in pending:
            metrics = evaluate_protocol(matrices[arm], info.protocols["stcln"], info.classes)
            out = anchor_dir(args, arm, budget, seed, fold)
            out.mkdir(parents=True, exist_ok=True)
            scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            write_text_atomic(
                out / "summary.json",
                json.dumps({"test": scalars, "train_pixels": int(len(y)), "confusion_matrix": matrices[arm].tolist()}),
            )
    records = []
    for arm in arms:
        summary = json.loads((anchor_dir(args, arm, budget, seed, fold) / "summary.json").read_text())
        records.append(
            {"arm": arm, "budget": budget, "seed": seed, **unit_fold(fold), "lr": None, "test": summary["test"]}
        )
    return records
