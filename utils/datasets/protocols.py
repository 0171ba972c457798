"""Label-limited and temporal-length protocols: the authors' PASTIS subsets, label ratios, date subsets."""

import calendar
import datetime
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from utils.errors import DataError

PASTIS_SPLITS_DIR = Path(__file__).resolve().parents[2] / "PASTIS" / "splits"
AUTHORS_SPLIT_FILES = {"train": "authors_2per_train.txt", "val": "authors_2per_val.txt"}
AUTHORS_FOLDS = {"train": (1,), "val": (2,)}  # folds the authors' lists were meant to come from
AUTHORS_CELLS = ((0, 0), (1, 1))  # 4x4 grid of 32-px crops: rows/cols 0-31 and 32-63 ("2Per")
AUTHORS_CELLS_5PER = ((0, 0), (1, 1), (2, 2), (3, 3), (1, 0))  # the script comment's "5Per"
AUTHORS_CROP_SIZE = 32
TEMPORAL_MODES = ("first", "even", "random", "window")
MONTHS_PER_YEAR = 12
UNSCORED = -1  # "dominant class" of a sample without any scored (crop) pixel: never drawn into a labelled subset


def read_id_list(path: str | Path) -> list[int]:
    """Patch/tile ids, one per line; ``#`` starts a comment; order and duplicates are kept."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: id list not found")
    ids = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            ids.append(int(text))
        except ValueError:
            raise DataError(f"{path}:{line_number}: not an integer id: {text!r}") from None
    if not ids:
        raise DataError(f"{path}: no ids")
    return ids


def authors_pastis_subset(split: str) -> tuple[list[int], list[tuple[int, int]]]:
    """The authors' hard-coded PASTIS fine-tuning subset (docs/method.md §3.2).

    Returns:
        (patch ids in the authors' order with duplicates, grid cells of 32-px crops). Use with
        ``PASTISDataset(folds=AUTHORS_FOLDS[split], ids=ids, crop_size=32, crop_mode='cells',
        cells=cells)``; the dataset checks that every id belongs to those folds.
    """
    if split not in AUTHORS_SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(AUTHORS_SPLIT_FILES)}, got {split!r}")
    return read_id_list(PASTIS_SPLITS_DIR / AUTHORS_SPLIT_FILES[split]), list(AUTHORS_CELLS)


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Samples per class: one for each class first (most frequent first), the rest proportionally.

    ``counts`` holds scored classes only: a class with no crop pixel never reaches this point.
    """
    order = np.argsort(-counts, kind="stable")
    take = np.zeros_like(counts)
    take[order[: min(total, len(counts))]] = 1
    remaining = total - take.sum()
    if remaining > 0:
        spare = counts - take
        share = remaining * spare / spare.sum()
        extra = np.floor(share).astype(int)
        leftover = remaining - extra.sum()
        by_remainder = np.argsort(-(share - extra), kind="stable")
        extra[by_remainder[:leftover]] += 1  # largest-remainder rounding
        take += np.minimum(extra, spare)
    return take


def label_ratio_subset(sample_classes: Sequence[int], ratio: float, seed: int) -> np.ndarray:
    """Seeded, class-stratified subset of sample indices holding ``ratio`` of the scored samples.

    Args:
        sample_classes: dominant crop class of each sample (e.g. ``dataset.dominant_classes()``),
            or a negative value (``UNSCORED``) for a sample without any scored pixel (only
            background/void or unknown). Such samples carry no label and are never drawn.
        ratio: fraction in (0, 1]; ``round(ratio * N)`` samples (at least 1) are kept, N being
            the number of scored samples (so 1.0 keeps every scored sample).
        seed: the subset is a deterministic function of the classes, ratio and seed.

    Returns:
        Sorted int64 indices. Every present class gets at least one sample when the budget
        allows it (the most frequent classes first otherwise); the rest follows class frequency.

    Raises:
        ValueError: a ratio outside (0, 1], or no scored sample at all.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"label ratio must be in (0, 1], got {ratio}")
    sample_classes = np.asarray(sample_classes)
    if sample_classes.size == 0:
        raise ValueError("label_ratio_subset: no samples")
    scored = sample_classes >= 0
    if not scored.any():
        raise ValueError(f"label_ratio_subset: none of the {sample_classes.size} samples has a scored (crop) pixel")
    total = max(1, round(ratio * int(scored.sum())))
    classes, counts = np.unique(sample_classes[scored], return_counts=True)
    take = _allocate(counts, total)
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(sample_classes == cls), size=n, replace=False)
        for cls, n in zip(classes, take)
        if n > 0
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _window_bounds(first_month: int, last_month: int, year: int) -> tuple[datetime.date, datetime.date]:
    """First day of ``first_month`` in ``year`` .. last day of ``last_month`` (next year if it wraps)."""
    end_year = year if last_month >= first_month else year + 1
    last_day = calendar.monthrange(end_year, last_month)[1]
    return datetime.date(year, first_month, 1), datetime.date(end_year, last_month, last_day)


class TemporalSubset:
    """Select frames of a date series: the paper's temporal-length / season-window protocols.

    Modes: 'first' (first ``n`` dates), 'even' (``n`` evenly spaced), 'random' (``n`` random,
    seeded, sorted) and 'window' (calendar months ``months=(first, last)`` inclusive, e.g. (2, 6)
    = Feb 1 .. Jun 30; it may wrap the new year, e.g. (10, 3)). The window is placed in the year
    where it holds the most of the given dates (the dates' season). ``n`` larger than the series
    keeps every date. Calling the object with a list of ``datetime.date`` returns sorted int64
    frame indices; fewer than one selected date raises a ValueError.
    """

    def __init__(self, mode: str, n: int | None = None, months: tuple[int, int] | None = None, seed: int = 0):
        if mode not in TEMPORAL_MODES:
            raise ValueError(f"temporal mode must be one of {TEMPORAL_MODES}, got {mode!r}")
        if mode == "window":
            if months is None or len(months) != 2 or not all(1 <= m <= MONTHS_PER_YEAR for m in months):
                raise ValueError(f"window mode needs months=(first, last) in 1..12, got {months}")
        elif n is None or n < 1:
            raise ValueError(f"temporal mode {mode!r} needs n >= 1, got {n}")
        self.mode, self.n, self.months, self.seed = mode, n, tuple(months) if months else None, seed

    def __repr__(self) -> str:
        detail = f"months={self.months}" if self.mode == "window" else f"n={self.n}"
        return f"TemporalSubset({self.mode!r}, {detail}, seed={self.seed})"

    def __call__(self, dates: Sequence[datetime.date]) -> np.ndarray:
        n_dates = len(dates)
        if self.mode == "window":
            indices = self._window(dates)
        elif self.mode == "first":
            indices = np.arange(min(self.n, n_dates))
        elif self.mode == "even":
            indices = np.unique(np.round(np.linspace(0, n_dates - 1, min(self.n, n_dates))).astype(np.int64))
        else:
            # Seeded by the series itself so a patch gets the same subset in every worker and epoch.
            key = [self.seed, n_dates, dates[0].toordinal() if n_dates else 0]
            rng = np.random.default_rng(key)
            indices = np.sort(rng.choice(n_dates, size=min(self.n, n_dates), replace=False))
        if len(indices) < 1:
            span = f"{dates[0]}..{dates[-1]}" if n_dates else "no dates"
            raise ValueError(f"{self!r} selects no date out of {n_dates} ({span})")
        return np.asarray(indices, dtype=np.int64)

    def _window(self, dates: Sequence[datetime.date]) -> np.ndarray:
        if not dates:
            return np.zeros(0, dtype=np.int64)
        first_month, last_month = self.months
        best = np.zeros(0, dtype=np.int64)
        for year in range(dates[0].year - 1, dates[-1].year + 1):
            start, end = _window_bounds(first_month, last_month, year)
            inside = np.flatnonzero([start <= date <= end for date in dates])
            if len(inside) > len(best):  # earliest year wins ties
                best = inside
        return best


def selects_a_date(temporal, dates: Sequence[datetime.date]) -> bool:
    """True if ``temporal`` (a :class:`TemporalSubset` or None = every date) keeps at least one of ``dates``."""
    if temporal is None:
        return len(dates) > 0
    try:
        return len(temporal(list(dates))) > 0
    except ValueError:  # TemporalSubset raises when it selects nothing
        return False
