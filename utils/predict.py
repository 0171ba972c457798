"""Whole-scene inference with overlapping sliding windows (``predict_STCLN.py``).

The model is applied to windows of the training crop size (its STA attention and the BatchNorm
statistics were learnt on such crops). Window logits are accumulated with a per-pixel weight into
a float32 sum and divided by the summed weight. Memory is bounded by one row strip: windows are
processed strip by strip (top to bottom), the accumulator holds only the ``window`` rows the
current strip touches, and rows that no later window reaches are finished (divided, handed to
``on_rows``) and dropped. The scene itself is read window by window from a memory-mapped cube.

Exactness (what ``tests/test_predict.py`` checks): with a single window covering the scene the
result is the full-scene forward pass. With overlapping windows the STA attention of a pixel
sees only its window, so the result differs from a full-scene pass unless the STA gate is 0. With
the gate at 0 every output depends only on the pixel's 9x9 neighbourhood (two DoubleConv blocks,
eval-mode BatchNorm, per-pixel temporal branch), so with ``margin`` >= the receptive radius (4)
each kept window pixel equals the full-scene pass, and so does their weighted mean.
"""

import dataclasses
import datetime
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from utils.args import parse_temporal
from utils.data import SMOKE_CROP, DataInfo, info_for, pastis_root
from utils.data_spec import DataSpec
from utils.datasets.folder import FolderDataset
from utils.datasets.pastis import PASTISDataset
from utils.datasets.scene import SQUARE_METRES_PER_HECTARE
from utils.errors import CheckpointError, DataError, STCLNError
from utils.precision import autocast_context

BLENDS = ("uniform", "linear")


@dataclass(frozen=True)
class WindowPlan:
    """Window size, starts along each axis and blending of a sliding-window pass over (H, W)."""

    height: int
    width: int
    window_h: int
    window_w: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]
    blend: str = "uniform"
    margin: int = 0

    @property
    def n_windows(self) -> int:
        return len(self.row_starts) * len(self.col_starts)


def window_starts(length: int, window: int, stride: int) -> tuple[int, ...]:
    """Starts of windows of size ``window`` every ``stride`` px, the last one flush with the end."""
    if length <= window:
        return (0,)
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return tuple(starts)


def plan_windows(height: int, width: int, window: int, stride: int, blend: str = "uniform", margin: int = 0) -> WindowPlan:
    """The windows covering an (H, W) scene; a window larger than the scene shrinks to it.

    Raises:
        STCLNError: a stride or margin that would leave pixels uncovered (``--stride``/``--margin``).
        ValueError: an unknown blend (the parser's choices prevent it: a bug).
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    if window < 1 or not 1 <= stride <= window - 2 * margin:
        raise STCLNError(f"--stride {stride} must be in 1..window - 2 * margin = {window - 2 * margin} "
                         f"(window {window}, margin {margin}), or some pixels get no window")
    window_h, window_w = min(window, height), min(window, width)
    return WindowPlan(height, width, window_h, window_w, window_starts(height, window_h, stride),
                      window_starts(width, window_w, stride), blend, margin)


def axis_weight(start: int, size: int, length: int, blend: str, margin: int) -> np.ndarray:
    """(size,) weight of a window's pixels along one axis.

    ``linear`` falls from the centre to 1 at the window edges (a pyramid once multiplied over the
    two axes); ``margin`` px next to an edge inside the scene get weight 0 (edges on the scene
    border keep theirs, no other window covers those pixels).
    """
    index = np.arange(size)
    weight = np.minimum(index + 1, size - index).astype(np.float32) if blend == "linear" else np.ones(size, np.float32)
    if margin:
        if start > 0:
            weight[:margin] = 0.0
        if start + size < length:
            weight[size - margin:] = 0.0
    return weight


def sliding_window_logits(
    model: nn.Module,
    read_window: Callable[[int, int, int, int], np.ndarray],
    positions: torch.Tensor,
    plan: WindowPlan,
    num_classes: int,
    on_rows: Callable[[int, np.ndarray], None],
    *,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    progress: bool = True,
    read_valid: Callable[[int, int, int, int], np.ndarray] | None = None,
    strips: Collection[int] | None = None,
    amp: bool = False,
    read_extra: Callable[[int, int, int, int], dict[str, np.ndarray]] | None = None,
    extra_positions: dict[str, torch.Tensor] | None = None,
) -> None:
    """Run ``model`` over every window of ``plan`` and hand finished rows of averaged logits to ``on_rows``.

    Args:
        model: (B, T, C, h, w), (B, T) positions, (B, T) pad mask -> (B, K, h, w) logits; put in eval mode here.
        read_window: (row, col, h, w) -> float32 (T, C, h, w) normalised input of that window.
        positions: (T,) model positions (date index or days).
        on_rows: called as ``on_rows(first_row, logits)`` with float32 (K, n, W) logits of rows
            ``first_row .. first_row + n - 1``, top to bottom, every row exactly once.
        read_valid: (row, col, h, w) -> bool (T, h, w) validity (cloud masks) of that window, passed
            to the model (honoured by models with ``use_valid_mask``), or None.
        strips: indices into ``plan.row_starts`` whose rows are handed to ``on_rows`` (default: all).
            The strips whose windows reach those rows are computed too (their rows not handed on), so
            the rows equal those of a full pass bit for bit: this is how a run resumes after its
            finished strips and how ranks share a scene (:func:`strips_needed`).
        amp: bf16 autocast around the forward passes (:func:`utils.precision.autocast_context`).
        read_extra: (row, col, h, w) -> {source: float32 (T_s, C_s, h, w)} normalised input of the further
            sources (a multi-source model), on their own dates; ``extra_positions`` their (T_s,) positions.
    """
    model.eval()
    height, width, window_h, window_w = plan.height, plan.width, plan.window_h, plan.window_w
    col_weights = [axis_weight(c, window_w, width, plan.blend, plan.margin) for c in plan.col_starts]
    logits_sum = np.zeros((num_classes, window_h, width), dtype=np.float32)  # rows [top, top + window_h)
    weight_sum = np.zeros((window_h, width), dtype=np.float32)
    emit = set(range(len(plan.row_starts)) if strips is None else strips)
    needed = strips_needed(plan, emit)
    bar = tqdm(total=len(needed) * len(plan.col_starts), desc="predict", unit="window", dynamic_ncols=True,
               disable=not progress)
    previous = None
    for strip in needed:
        top = plan.row_starts[strip]
        if previous is not None and strip != previous + 1:  # a gap: no earlier strip reaches the rows emitted next
            logits_sum[:] = 0.0
            weight_sum[:] = 0.0
        previous = strip
        row_weight = axis_weight(top, window_h, height, plan.blend, plan.margin)
        for first in range(0, len(plan.col_starts), batch_size):
            cols = plan.col_starts[first:first + batch_size]
            batch = np.stack([read_window(top, col, window_h, window_w) for col in cols])  # (B, T, C, h, w)
            x = torch.from_numpy(batch).to(device)
            valid = None
            if read_valid is not None:
                valid = torch.from_numpy(np.stack([read_valid(top, col, window_h, window_w) for col in cols])).to(device)
            more = {}  # a single-source model is called exactly as before
            if read_extra is not None:
                windows = [read_extra(top, col, window_h, window_w) for col in cols]
                more["extra"] = {
                    name: (torch.from_numpy(np.stack([own[name] for own in windows])).to(device),
                           place.to(device).expand(len(cols), -1),
                           torch.zeros(len(cols), len(place), dtype=torch.bool, device=device))
                    for name, place in extra_positions.items()}
            with torch.no_grad(), autocast_context(amp, torch.device(device)):
                logits = model(x, positions.to(device).expand(len(cols), -1),
                               torch.zeros(len(cols), x.shape[1], dtype=torch.bool, device=device), valid,
                               **more)  # (B, K, h, w)
            logits = logits.float().cpu().numpy()
            for offset, col in enumerate(cols):
                weight = row_weight[:, None] * col_weights[first + offset][None, :]  # (h, w)
                logits_sum[:, :, col:col + window_w] += logits[offset] * weight
                weight_sum[:, col:col + window_w] += weight
            bar.update(len(cols))
        next_top = plan.row_starts[strip + 1] if strip + 1 < len(plan.row_starts) else top + window_h
        done = next_top - top  # rows no later window reaches
        if strip in emit:
            on_rows(top, logits_sum[:, :done] / weight_sum[None, :done])
        logits_sum = np.concatenate([logits_sum[:, done:], np.zeros_like(logits_sum[:, :done])], axis=1)
        weight_sum = np.concatenate([weight_sum[done:], np.zeros_like(weight_sum[:done])], axis=0)
    bar.close()


def strips_needed(plan: WindowPlan, emit: Collection[int]) -> list[int]:
    """The strips (indices into ``plan.row_starts``), in order, whose windows reach a row of a strip in ``emit``.

    A strip emits the rows from its start to the next strip's start; every window of an earlier strip
    that overlaps those rows contributes to their blended logits, so it is computed again."""
    starts = plan.row_starts
    needed = set()
    for strip in emit:
        needed.add(strip)
        earlier = strip - 1
        while earlier >= 0 and starts[earlier] + plan.window_h > starts[strip]:
            needed.add(earlier)
            earlier -= 1
    return sorted(needed)


def split_strips(n_strips: int, world_size: int, rank: int) -> range:
    """This rank's contiguous share of a scene's strips (ranks 0..world_size - 1 cover them once)."""
    per_rank, extra = divmod(n_strips, world_size)
    first = rank * per_rank + min(rank, extra)
    return range(first, first + per_rank + (rank < extra))


def class_areas(class_map: np.ndarray, classes: list[str], pixel_area_m2: float | None) -> list[dict]:
    """Per-class pixel counts, share and (when the pixel area is known) hectares."""
    counts = np.bincount(class_map.ravel(), minlength=len(classes))
    rows = []
    for index, (name, count) in enumerate(zip(classes, counts)):
        row = {"index": index, "class": name, "pixels": int(count), "share": float(count / class_map.size)}
        if pixel_area_m2 is not None:
            row["hectares"] = float(count * pixel_area_m2 / SQUARE_METRES_PER_HECTARE)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# what the scene needs from training: normalisation, dates, classes (predict_STCLN.py)
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainingContext:
    """Everything a scene is prepared with, taken from the fine-tuning run of the checkpoint."""

    mean: np.ndarray
    std: np.ndarray
    reference_date: datetime.date
    temporal: Callable | None
    window: int  # training crop size (0: trained on whole patches)
    info: DataInfo
    date_range: tuple[datetime.date, datetime.date] | None = None  # first and last training acquisition
    source_norm: dict = dataclasses.field(default_factory=dict)  # further source -> (mean, std), (C_s,) float32
    source_date_range: dict = dataclasses.field(default_factory=dict)  # further source -> (first, last) date


def training_context(ckpt_args: dict, data_root: Path | None = None) -> TrainingContext:
    """Normalisation (training folds' statistics), reference date, temporal subset, crop size and
    class metadata of the run that wrote a checkpoint (``ckpt['args']``).

    Raises:
        CheckpointError: the checkpoint has no run arguments or was trained on MTLCC.
    """
    needed = ("dataset", "data_root", "train_folds", "crop_size", "temporal")
    if not isinstance(ckpt_args, dict) or any(key not in ckpt_args for key in needed):
        raise CheckpointError("checkpoint has no fine-tuning arguments ('args'): use a best.tar/last.tar of fine-tuning")
    spec = DataSpec.from_args({**ckpt_args, "data_root": str(data_root) if data_root else ckpt_args["data_root"]})
    if spec.dataset == "pastis" and spec.data_root is None:  # written before --dataset pastis needed --data_root
        spec = dataclasses.replace(spec, dataset="synthetic")
    if spec.layout == "mtlcc":
        raise CheckpointError("predict_STCLN.py takes models fine-tuned on PASTIS-format or folder data (not MTLCC)")
    if spec.data_root is not None and not spec.data_root.is_dir():
        raise DataError(f"{spec.data_root}: the checkpoint's training data folder is not there (moved?); the map needs "
                        "its normalisation statistics, dates and classes: pass --data_root with its new place")
    sources = {"sources": spec.sources} if spec.extra_sources else {}  # the further sources' statistics too
    if spec.dataset == "folder":
        reference = FolderDataset(spec.data_root, folds=spec.split_folds("train_folds"), labels=False, **sources)
    else:
        reference = PASTISDataset(pastis_root(spec), folds=spec.split_folds("train_folds"), **sources)
    window = SMOKE_CROP if spec.crop_size and spec.smoke else spec.crop_size
    try:
        temporal = parse_temporal(spec.temporal)
    except ValueError as err:
        raise CheckpointError(f"checkpoint arguments: {err}") from None
    dates = [date for patch in reference.patches for date in patch.meta.dates]
    ranges = {}
    for source in spec.extra_sources:
        own = [date for patch in reference.patches for date in patch.meta.dates_of(source)]
        ranges[source] = (min(own), max(own)) if own else None
    return TrainingContext(reference.mean, reference.std, reference.reference_date, temporal,
                           int(window), info_for(spec), (min(dates), max(dates)) if dates else None,
                           {source: reference.source_norm[source] for source in spec.extra_sources}, ranges)
