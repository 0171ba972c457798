"""Which training patches to label next: random, core-set (k-center), uncertainty (entropy, margin) or BADGE.

    python -m utils.select_labels --checkpoint checkpoints/pretrain/slovenia/checkpoint_39.stcln.tar \\
        --dataset folder --data_root data/slovenia --strategy kcenter --n 10 --output_dir selection/round1
    python -m utils.select_labels --checkpoint checkpoints/finetune/slovenia/best.tar --dataset folder \\
        --data_root data/slovenia --strategy badge --n 10 --exclude selection/round1/selection.json \\
        --output_dir selection/round2
    python -m utils.select_labels --smoke --strategy badge --n 3 --output_dir selection/smoke

Candidates are the patches of the training folds only (dataset.json ``splits.train`` of a folder, the
paper's fold 1 of PASTIS-format data, or ``--train_folds``), never a validation or test patch, less the
ids of the ``--exclude`` files (already labelled). The strategies (docs/select_labels.md):

* ``random``: a permutation of the candidates seeded by ``--seed``. Needs no model.
* ``kcenter``: the core-set of Sener & Savarese (2018): greedy farthest-first traversal of the patches'
  pooled features, L2-normalised, Euclidean distance. The first pick is the candidate farthest from
  the candidates' mean, or, when already-labelled training patches are given, the one farthest from
  them; each next pick is the candidate farthest from everything picked or labelled. Needs no labels:
  a pre-trained backbone chooses the first batch. Score: the distance at its pick (the covering radius).
* ``entropy``: mean over the patch's valid pixels of the predictive entropy; highest first.
* ``margin``: mean over the patch's valid pixels of top-1 minus top-2 probability; smallest first.
* ``badge``: BADGE (Ash et al., 2020): per patch the gradient of the cross-entropy at the model's own
  predictions with respect to the classifier's weights and bias, averaged over the valid pixels, then
  k-means++ seeding on these embeddings (the largest first, or from the labelled ones; then each next
  with probability proportional to its squared distance to the nearest picked or labelled one, seeded).
  The embedding's norm grows with the uncertainty and its direction follows the content, so one
  embedding trades off uncertainty and diversity, with no extra parameter. Score: its distance at its pick.

``entropy``, ``margin`` and ``badge`` need a fine-tuned checkpoint; ``kcenter`` takes a backbone (ours,
a pre-training ``last.tar`` or the authors' file) or a fine-tuned checkpoint. Probabilities are a
softmax over the classes the model learns (every class but the ignored and background ones, which
fine-tuning gives zero weight). A pixel is valid when it has at least one clear observation (cloud
masks, folder data with ``valid_masks``; every pixel otherwise): the candidates' labels are never used.

Features: the per-pixel representation the classifier reads (the STA fusion's output) of a fine-tuned
checkpoint; of a backbone, its temporal branch max-pooled over dates (what the STA pools, the head's
input at a zero STA gate); averaged over the patch's valid pixels. The model runs in eval mode on the
grid of non-overlapping windows of its training crop size (``--window``), as fine-tuning reads patches.

Several sources (``--sources S2 S1`` models, docs/model.md "Several sources"): the data is read with the
sources the checkpoint's model was trained on (its run's ``--sources``, else S2 and its model_config's
``extra_sources``); data without one of them is refused. A fine-tuned model's features and probabilities
are those of its fused head, as fine-tuning computes them; a backbone's features are, with merged fusion,
its joint sequence max-pooled over every source's dates, with late fusion each source's own temporal
branch max-pooled over its own dates, concatenated. Radar dates are always clear: a pixel with a radar
date counts as valid.

Writes into ``--output_dir``: ``selection.json`` (strategy, seed, checkpoint, N, the ordered ids with
score and footprint), ``selection.geojson`` (the selected footprints; CRS as in metadata.geojson) and
``selection.png`` (every patch, coloured by candidate, selected, already labelled and other folds).
"""

import argparse
import json
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models import STCLN, STCLNConfig, STCLNSegmenter, tiny_config
from models.heads import is_late
from utils.args import GENERIC_DEFAULTS, HelpFormatter, device_name, parse_temporal
from utils.checkpoint import (
    PretrainedBackbone,
    checkpoint_sources,
    config_for_backbone,
    extract_backbone_state,
    is_authors_backbone,
    load_checkpoint,
    load_state_checked,
    sizes_from_tensors,
    strip_wrapper_prefixes,
)
from utils.data import check_disjoint_folds, info_for, pastis_root, resolve_data_spec
from utils.data_bundle import SMOKE_CROP, DataInfo
from utils.data_spec import DataSpec
from utils.datasets.collate import pad_collate
from utils.datasets.folder import FolderDataset, read_dataset_json
from utils.datasets.pastis import METADATA_FILE, PASTISDataset
from utils.datasets.sources import PRIMARY_DEFAULT, data_dir
from utils.distributed import resolve_device
from utils.engine import extra_inputs, extra_kwargs, model_inputs
from utils.errors import CheckpointError, DataError
from utils.figures import plot_patch_selection
from utils.precision import autocast_context, resolve_amp
from utils.report import format_table, write_json
from utils.runner import guarded_main

log = logging.getLogger("stcln")
STRATEGIES = ("random", "kcenter", "entropy", "margin", "badge")
NEEDS_HEAD = ("entropy", "margin", "badge")  # they read the classifier's probabilities
NEEDS_MODEL = ("kcenter", *NEEDS_HEAD)
SELECT_DATASETS = ("synthetic", "pastis", "folder")  # PASTIS-layout patches with folds and footprints
OUTPUTS = ("selection.json", "selection.geojson", "selection.png")
NORM_EPS = 1e-12
DISTANCE_CHUNK = 1 << 22  # rows x labelled x dims per chunk of pairwise distances
SCORES = {
    "random": None,
    "kcenter": "distance to the nearest picked or labelled patch at its pick (the first pick without labelled patches: to the mean), L2-normalised features",
    "entropy": "mean predictive entropy over the patch's valid pixels (nats; highest first)",
    "margin": "mean top-1 minus top-2 probability over the patch's valid pixels (smallest first)",
    "badge": "distance of the gradient embedding to the nearest picked or labelled one at its pick",
}


# ---------------------------------------------------------------------------------------------
# the strategies on arrays (tested on hand-built values)
# ---------------------------------------------------------------------------------------------
def l2_normalise(features: np.ndarray) -> np.ndarray:
    """(N, D) rows scaled to unit length (a zero row stays zero)."""
    features = np.asarray(features, dtype=np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), NORM_EPS)


def min_distances(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(N,) Euclidean distance of each of ``points`` (N, D) to the nearest of ``others`` (M, D), M >= 1."""
    points, others = np.asarray(points, dtype=np.float64), np.asarray(others, dtype=np.float64)
    rows = max(1, DISTANCE_CHUNK // max(1, others.shape[0] * points.shape[1]))
    out = np.empty(points.shape[0])
    for start in range(0, points.shape[0], rows):
        block = points[start : start + rows, None, :] - others[None, :, :]  # (n, 1, D) - (1, M, D) -> (n, M, D)
        out[start : start + rows] = np.sqrt(np.square(block).sum(axis=2)).min(axis=1)
    return out


def random_order(n_candidates: int, n: int, seed: int) -> list[int]:
    """The first ``n`` of a permutation of ``range(n_candidates)`` seeded by ``seed``."""
    return [int(i) for i in np.random.default_rng(seed).permutation(n_candidates)[:n]]


def kcenter_greedy(features: np.ndarray, n: int, labelled: np.ndarray | None = None) -> tuple[list[int], list[float]]:
    """Greedy farthest-first traversal (the k-center core-set) of ``features`` (N, D), Euclidean, as given.

    The first pick is the point farthest from the points' mean, or, with ``labelled`` (M, D) points,
    the one farthest from them; each next pick is the point whose nearest picked or labelled point is
    farthest. Ties go to the lowest index. Returns the ``n`` picks in order and each one's distance at
    its pick (to the mean for an unlabelled first pick).
    """
    features = np.asarray(features, dtype=np.float64)
    order: list[int] = []
    radii: list[float] = []
    if labelled is not None and len(labelled):
        nearest = min_distances(features, labelled)
    else:
        to_mean = np.linalg.norm(features - features.mean(axis=0), axis=1)
        first = int(np.argmax(to_mean))
        order.append(first)
        radii.append(float(to_mean[first]))
        nearest = np.linalg.norm(features - features[first], axis=1)
    while len(order) < n:
        open_ = nearest.copy()
        open_[order] = -np.inf  # a duplicate of a pick is at distance 0, never below a pick
        pick = int(np.argmax(open_))
        order.append(pick)
        radii.append(float(nearest[pick]))
        nearest = np.minimum(nearest, np.linalg.norm(features - features[pick], axis=1))
    return order[:n], radii[:n]


def kmeanspp_seeding(
    embeddings: np.ndarray, n: int, seed: int, labelled: np.ndarray | None = None
) -> tuple[list[int], list[float]]:
    """k-means++ seeding of ``embeddings`` (N, E) as BADGE picks a batch; deterministic by ``seed``.

    The first pick is the largest embedding (BADGE's choice), or, with ``labelled`` (M, E) embeddings,
    a draw proportional to the squared distance to the nearest labelled one; each next pick is drawn
    with probability proportional to the squared distance to the nearest picked or labelled embedding
    (uniformly among the rest when all those distances are 0). Returns the picks in order and each
    one's distance at its pick (its norm for an unlabelled first pick).
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    radii: list[float] = []
    if labelled is not None and len(labelled):
        nearest = min_distances(embeddings, labelled)
    else:
        norms = np.linalg.norm(embeddings, axis=1)
        first = int(np.argmax(norms))
        order.append(first)
        radii.append(float(norms[first]))
        nearest = np.linalg.norm(embeddings - embeddings[first], axis=1)
    while len(order) < n:
        weight = np.square(nearest)
        weight[order] = 0.0
        total = weight.sum()
        if total > 0:
            pick = int(rng.choice(len(weight), p=weight / total))
        else:
            pick = int(rng.choice(np.setdiff1d(np.arange(len(weight)), order)))
        order.append(pick)
        radii.append(float(nearest[pick]))
        nearest = np.minimum(nearest, np.linalg.norm(embeddings - embeddings[pick], axis=1))
    return order[:n], radii[:n]


def rank_by_score(scores: np.ndarray, n: int, highest_first: bool) -> list[int]:
    """Indices of the ``n`` best scores (highest or lowest first); NaN (no valid pixel) last, ties by index."""
    scores = np.asarray(scores, dtype=np.float64)
    key = -scores if highest_first else scores.copy()
    key[np.isnan(key)] = np.inf
    return [int(i) for i in np.argsort(key, kind="stable")[:n]]


def pixel_uncertainty(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., K) logits -> (entropy (...), margin (...), probabilities (..., K)) of their softmax, in fp32.

    Entropy in nats; margin = top-1 minus top-2 probability (K >= 2).
    """
    log_p = torch.log_softmax(logits.float(), dim=-1)
    p = log_p.exp()
    entropy = -(p * log_p).sum(dim=-1)
    top2 = p.topk(2, dim=-1).values
    return entropy, top2[..., 0] - top2[..., 1], p


def gradient_embedding(p: torch.Tensor, features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """BADGE's last-layer gradient embedding summed over pixels.

    Args:
        p: (B, P, K) probabilities; features: (B, P, D) the classifier's input; weight: (B, P) pixel weights.
    Returns:
        (B, K, D + 1): sum over pixels of weight * (p - onehot(argmax p)) outer [features, 1], the
        gradient of the pixels' cross-entropy at the predicted class w.r.t. the weights and bias.
    """
    residual = p - torch.nn.functional.one_hot(p.argmax(dim=-1), p.shape[-1]).to(p.dtype)  # (B, P, K)
    augmented = torch.cat([features, features.new_ones(*features.shape[:-1], 1)], dim=-1)  # (B, P, D + 1)
    return torch.einsum("bpk,bpd->bkd", residual * weight[..., None], augmented)


# ---------------------------------------------------------------------------------------------
# the model: a fine-tuned segmenter or a backbone, from any supported file
# ---------------------------------------------------------------------------------------------
@dataclass
class SelectionModel:
    """The network that scores patches; ``head`` False for a backbone without classifier."""

    module: nn.Module
    config: STCLNConfig
    head: bool
    kind: str  # 'fine-tuned', 'backbone' or 'random (--smoke)'
    args: dict | None  # the fine-tuning run's arguments (window, temporal subset), or None

    @property
    def width(self) -> int:
        """Width of the pooled features: D, or for a late-fusion backbone D per source (concatenated)."""
        if not self.head and is_late(self.config):
            return self.config.d_model * (1 + len(self.config.extra_sources))
        return self.config.d_model


def read_checkpoint(path: Path, trusted: bool) -> tuple[dict, bool]:
    """(the file's content, whether it is a fine-tuned checkpoint with a classifier)."""
    raw = load_checkpoint(path, trusted)
    state = raw.get("model") if isinstance(raw, dict) else None
    fine_tuned = (
        isinstance(state, dict)
        and isinstance(raw.get("model_config"), dict)
        and "classifier.weight" in strip_wrapper_prefixes(state)
    )
    return raw, fine_tuned


def model_sources(path: Path, raw: dict, fine_tuned: bool) -> tuple[str, ...]:
    """The image sources (primary first) the checkpoint's model reads: its run's saved ``--sources``, else S2
    followed by its model_config's extra sources; S2 for a file without model_config (the authors')."""
    source = str(path)
    saved = raw.get("model_config") if isinstance(raw, dict) else None
    if not isinstance(saved, dict):
        return (PRIMARY_DEFAULT,)
    try:
        config = STCLNConfig.from_dict(saved if fine_tuned else saved | {"num_classes": 1})
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: invalid model_config ({err})") from None
    return checkpoint_sources(raw, config, source)


def load_selection_model(path: Path, raw: dict, fine_tuned: bool, info: DataInfo) -> SelectionModel:
    """The segmenter of a fine-tuned checkpoint, or the backbone of any ``--pretrain_pth`` file, checked
    against the data's bands, sources (and classes)."""
    source = str(path)
    if fine_tuned:
        try:
            config = STCLNConfig.from_dict(raw["model_config"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: invalid model_config ({err})") from None
        check_sources(config, info, source)
        if (config.in_channels, config.num_classes) != (info.in_channels, info.num_classes):
            raise CheckpointError(
                f"{source}: the model takes {config.in_channels} bands and {config.num_classes} classes, the data "
                f"has {info.in_channels} bands and {info.num_classes} classes"
            )
        model = STCLNSegmenter(config)
        load_state_checked(model, strip_wrapper_prefixes(raw["model"]), source)
        args = raw.get("args") if isinstance(raw.get("args"), dict) else None
        return SelectionModel(model, config, True, "fine-tuned", args)
    state, saved = extract_backbone_state(raw, source)
    plain = strip_wrapper_prefixes(raw) if isinstance(raw, dict) else {}
    authors = saved is None and is_authors_backbone(plain)
    backbone = PretrainedBackbone(state, sizes_from_tensors(state, source), saved, authors, source)
    base = STCLNConfig(in_channels=info.in_channels, num_classes=info.num_classes)
    if saved is not None:
        try:
            base = STCLNConfig.from_dict({k: v for k, v in saved.items() if k != "num_classes"} | {"num_classes": 1})
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: invalid model_config ({err})") from None
        if base.in_channels != info.in_channels:
            raise CheckpointError(
                f"{source}: the backbone takes {base.in_channels} bands, the data has {info.in_channels}"
            )
    check_sources(base, info, source)
    config = config_for_backbone(base, backbone, allow_encoding_change=True)
    model = STCLN(config)
    load_state_checked(model, state, source)
    return SelectionModel(model, config, False, "backbone", None)


def check_sources(config: STCLNConfig, info: DataInfo, source: str) -> None:
    """The model's further sources (and their bands) must be those the data brings."""
    model = (tuple(config.extra_sources), tuple(config.extra_channels))
    if model != (tuple(info.extra_sources), tuple(info.extra_channels)):
        raise CheckpointError(
            f"{source}: the model takes the extra sources {list(config.extra_sources)} with bands "
            f"{list(config.extra_channels)}, the data brings {list(info.extra_sources)} with {list(info.extra_channels)}"
        )


def random_smoke_model(info: DataInfo, seed: int) -> SelectionModel:
    """--smoke without --checkpoint: a tiny segmenter with seeded random weights (a check of the plumbing)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = STCLNSegmenter(tiny_config(in_channels=info.in_channels, num_classes=info.num_classes))
    return SelectionModel(model, model.config, True, "random (--smoke)", None)


def trained_classes(info: DataInfo) -> list[int]:
    """The classes fine-tuning learns: every class but the ignored and background ones (zero loss weight)."""
    return [c for c in range(info.num_classes) if c not in (info.ignore_index, info.background_index)]


def window_forward(
    selection: SelectionModel, batch: dict, device: torch.device, amp: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One batch of windows -> (features (B, P, D') fp32, logits (B, P, K) fp32 or None, valid pixels (B, P) bool).

    P = H * W pixels. Features: the classifier's input (fine-tuned: every source fused, as fine-tuning
    computes it) or the temporal branch max-pooled over the dates the model keeps (backbone; merged fusion:
    over the joint sequence of every source's dates; late fusion: each source's own branch over its own dates,
    concatenated, D' = D per source). A pixel is valid when any of its real dates is clear (radar dates are
    always clear: with further sources, a pixel with a real date of one of them is valid).
    """
    config = selection.config
    x, positions, pad_mask = (tensor.to(device) for tensor in model_inputs(batch, config))
    valid = batch["valid"].to(device) if "valid" in batch else None
    extra = extra_inputs(batch, config)
    if extra is not None:
        extra = {name: tuple(tensor.to(device) for tensor in inputs) for name, inputs in extra.items()}
    B, T, C, H, W = x.shape
    module = selection.module
    with autocast_context(amp, device):
        if selection.head:
            features = module.features(x, positions, pad_mask, valid, extra)  # (B, HW, D)
            logits = module.classifier(features).float()  # (B, HW, K)
        else:
            encoded = module(x, positions, pad_mask, valid, **extra_kwargs(extra))
            if extra is not None and config.fusion == "merged":  # one joint sequence: the primary's dates first
                features = max_pool(encoded, torch.cat([pad_mask] + [extra[name][2] for name in extra], dim=1))
            else:
                features = max_pool(encoded, pad_mask)
                if extra is not None:  # late: each source's own backbone on its own dates
                    own = [max_pool(encoded["extra"][name], extra[name][2]) for name in config.extra_sources]
                    features = torch.cat([features, *own], dim=-1)  # (B, HW, D * (1 + S))
            logits = None
    real = ~pad_mask[:, :, None, None]  # (B, T) -> (B, T, 1, 1)
    clear = real.expand(B, T, H, W) if valid is None else valid & real
    clear = clear.any(dim=1).reshape(B, H * W)  # (B, H, W) -> (B, HW)
    if extra is not None:
        radar = torch.cat([~inputs[2] for inputs in extra.values()], dim=1).any(dim=1)  # (B, sum T_s) -> (B,)
        clear = clear | radar[:, None]
    return features.float(), logits, clear


def max_pool(encoded: dict, pad_mask: torch.Tensor) -> torch.Tensor:
    """(B, HW, D): a backbone output's temporal features max-pooled over the dates it keeps per pixel
    (``pad_mask`` (B, T): the padded ones left out, and ``encoded["dropped"]``)."""
    temporal = encoded["temporal"]  # (B, H, W, T, D)
    B, H, W, T, _ = temporal.shape
    skip = pad_mask[:, None, None, :].expand(B, H, W, T)  # (B, T) -> (B, H, W, T)
    if encoded["dropped"] is not None:
        skip = skip | encoded["dropped"]
    pooled = temporal.masked_fill(skip[..., None], float("-inf")).amax(dim=3)  # (B, H, W, D)
    return pooled.reshape(B, H * W, -1)  # (B, H, W, D) -> (B, HW, D)


# ---------------------------------------------------------------------------------------------
# the candidates: training-fold patches, read as windows, and their footprints
# ---------------------------------------------------------------------------------------------
def open_training_patches(spec: DataSpec, window: int, temporal: str | None) -> PASTISDataset:
    """The training folds' patches as a grid of ``window``-px windows (0: whole patches; a window larger than
    the smallest patch shrinks to its side), normalised with the training folds' statistics, every source of
    ``spec.sources``; labels are never read (folder data; PASTIS-format samples carry theirs, unused)."""
    folds = spec.split_folds("train_folds")
    subset = parse_temporal(temporal)
    sources = {} if spec.sources == (PRIMARY_DEFAULT,) else {"sources": spec.sources}

    def make(crop: int | None) -> PASTISDataset:
        if spec.dataset == "folder":
            return FolderDataset(
                spec.data_root, folds, folds, crop_size=crop, crop_mode="grid", temporal=subset, labels=False, **sources
            )
        return PASTISDataset(
            pastis_root(spec), folds, folds, crop_size=crop, crop_mode="grid", temporal=subset, **sources
        )

    if not window:
        return make(None)
    whole = make(None)  # the patch sizes (file headers only)
    return make(min(window, min(min(patch.height, patch.width) for patch in whole.patches)))


def window_groups(dataset: PASTISDataset) -> dict[tuple[int, int, int], list[int]]:
    """The data set's sample indices by (dates, height, width, and with further sources each one's dates):
    windows that can share a batch unpadded."""
    groups: dict[tuple[int, ...], list[int]] = {}
    further = getattr(dataset, "extra_sources", ())
    for index, (position, _) in enumerate(dataset.entries):
        patch = dataset.patches[position]
        dates = list(patch.meta.dates)
        n_dates = len(dataset.temporal(dates)) if dataset.temporal is not None else len(dates)
        size = (dataset.crop_size, dataset.crop_size) if dataset.crop_size else (patch.height, patch.width)
        counts = []
        if further:
            for source in dataset.sources:
                own = list(patch.meta.dates_of(source))
                counts.append(len(dataset.temporal(own)) if dataset.temporal is not None else len(own))
        groups.setdefault((n_dates, *size, *counts), []).append(index)
    return groups


def window_batches(
    dataset: PASTISDataset, batch_size: int, per_sample: bool = False
) -> Iterator[tuple[np.ndarray, dict]]:
    """(patch positions (B,), or with ``per_sample`` the windows' sample indices, collated batch) of every
    window; a batch holds windows of one date count and size, so no window is padded and a patch's values do
    not depend on the batch size."""
    groups = window_groups(dataset)
    for key in sorted(groups):
        indices = groups[key]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            positions = np.array(chunk if per_sample else [dataset.entries[i][0] for i in chunk])
            yield positions, pad_collate([dataset[i] for i in chunk])


class PatchSums:
    """Per-patch sums over the pixels of its windows, and their means (:meth:`result`).

    Args:
        n: patches; width: feature width D; classes: the classes of the probabilities (K' of them), or
            None for a model without head (features only).
    """

    def __init__(self, n: int, width: int, classes: list[int] | None) -> None:
        self.classes = classes
        self.sums = {
            "valid": np.zeros((n, width)),
            "all": np.zeros((n, width)),
            "n_valid": np.zeros(n),
            "n_all": np.zeros(n),
        }
        if classes is not None:
            self.sums |= {
                "entropy": np.zeros(n),
                "margin": np.zeros(n),
                "badge": np.zeros((n, len(classes), width + 1)),
            }

    def add(
        self, positions: np.ndarray, features: torch.Tensor, logits: torch.Tensor | None, valid: torch.Tensor
    ) -> None:
        """Add windows: ``positions`` (B,) their patches (repeats allowed), ``features`` (B, P, D), ``logits``
        (B, P, K) of every class (or None), ``valid`` (B, P) bool pixels that count."""
        features = features.float()
        weight = valid.to(features.dtype)  # (B, P)
        add = {
            "valid": (features * weight[..., None]).sum(dim=1),
            "all": features.sum(dim=1),
            "n_valid": weight.sum(dim=1),
            "n_all": torch.full_like(weight[:, 0], weight.shape[1]),
        }
        if self.classes is not None:
            entropy, margin, p = pixel_uncertainty(logits[..., self.classes])
            add |= {
                "entropy": (entropy * weight).sum(dim=1),
                "margin": (margin * weight).sum(dim=1),
                "badge": gradient_embedding(p, features, weight),
            }
        for key, value in add.items():
            np.add.at(self.sums[key], np.asarray(positions), value.double().cpu().numpy())

    def result(self) -> dict[str, np.ndarray]:
        """``features`` (N, D) and, with classes, ``entropy`` (N,), ``margin`` (N,) and ``badge`` (N, K' * (D + 1)):
        means over each patch's valid pixels (features: over all its pixels when none is valid; scores: NaN)."""
        sums = self.sums
        counts = sums["n_valid"]
        some = counts > 0
        per_pixel = np.maximum(counts, 1)
        features = np.where(
            some[:, None], sums["valid"] / per_pixel[:, None], sums["all"] / np.maximum(sums["n_all"], 1)[:, None]
        )
        out = {"features": features, "n_valid_pixels": counts}
        if self.classes is not None:
            for key in ("entropy", "margin"):
                out[key] = np.where(some, sums[key] / per_pixel, np.nan)
            badge = sums["badge"] / per_pixel[:, None, None]
            out["badge"] = badge.reshape(len(counts), -1)  # (N, K', D + 1) -> (N, K' * (D + 1))
        return out


def patch_statistics(
    selection: SelectionModel,
    dataset: PASTISDataset,
    classes: list[int] | None,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool,
    progress: bool = False,
    per_sample: bool = False,
) -> dict[str, np.ndarray]:
    """:meth:`PatchSums.result` of every patch of ``dataset`` (in its order), or with ``per_sample`` of every
    sample (window) of it, the model in eval mode; the uncertainties over ``classes`` when given (the model
    must have a head), features only otherwise."""
    sums = PatchSums(len(dataset) if per_sample else len(dataset.patches), selection.width, classes)
    selection.module.to(device).eval()
    n_batches = sum(math.ceil(len(group) / batch_size) for group in window_groups(dataset).values())
    with torch.no_grad():
        for positions, batch in tqdm(
            window_batches(dataset, batch_size, per_sample), total=n_batches, desc="windows", disable=not progress
        ):
            sums.add(positions, *window_forward(selection, batch, device, amp))
    return sums.result()


@dataclass
class PatchPlace:
    """Where a patch lies: its fold, footprint (GeoJSON geometry or None), ROW/COL (or None)."""

    fold: int
    geometry: dict | None
    row: int | None
    col: int | None


def read_places(root: Path) -> tuple[dict[int, PatchPlace], dict | None]:
    """Every patch of ``root/metadata.geojson`` by ID_PATCH, and the file's ``crs`` member (or the EPSG
    code of dataset.json's georeferencing for a folder, or None)."""
    path = Path(root) / METADATA_FILE
    collection = json.loads(path.read_text(encoding="utf-8"))  # validated by the data set already
    places = {}
    for feature in collection["features"]:
        props = feature.get("properties") or {}
        geometry = feature.get("geometry")
        if not (isinstance(geometry, dict) and geometry.get("type") in ("Polygon", "MultiPolygon")):
            geometry = None
        row, col = props.get("ROW"), props.get("COL")
        places[int(props["ID_PATCH"])] = PatchPlace(
            int(props["Fold"]), geometry, int(row) if row is not None else None, int(col) if col is not None else None
        )
    crs = collection.get("crs")
    if crs is None and (Path(root) / "dataset.json").is_file():
        grid = read_dataset_json(root).georeferencing or {}
        if grid.get("epsg"):
            crs = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{int(grid['epsg'])}"}}
    return places, crs


def outlines(places: dict[int, PatchPlace], sizes: dict[int, tuple[int, int]]) -> tuple[dict[int, list], str]:
    """Per patch, the rings to draw, and what the axes are: the footprints (every patch has one), else the
    ROW/COL pixel grid, else a grid by id order (no coordinates known)."""
    ids = sorted(places)
    if all(places[i].geometry is not None for i in ids):
        rings = {}
        for i in ids:
            geometry = places[i].geometry
            polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
            rings[i] = [np.asarray(polygon[0], dtype=np.float64)[:, :2] for polygon in polygons]
        return rings, "metadata.geojson coordinates"
    side = max((max(size) for size in sizes.values()), default=1)
    if all(places[i].row is not None and places[i].col is not None for i in ids):
        corners = {i: (places[i].row, places[i].col, *sizes.get(i, (side, side))) for i in ids}
        label = "scene pixels (ROW, COL)"
    else:
        columns = math.ceil(math.sqrt(len(ids)))
        corners = {i: (k // columns * side, k % columns * side, side, side) for k, i in enumerate(ids)}
        label = "patches by id (no footprints in metadata.geojson)"
    rings = {
        i: [np.array([[c, r], [c + w, r], [c + w, r + h], [c, r + h], [c, r]], dtype=np.float64)]
        for i, (r, c, h, w) in corners.items()
    }
    return rings, label


# ---------------------------------------------------------------------------------------------
# --exclude files
# ---------------------------------------------------------------------------------------------
def read_excluded(paths: Sequence[Path]) -> list[int]:
    """The ids of already-labelled patches: text files (one or more integer ids per line, '#' comments)
    or JSON (a list of ids, or a selection.json: its 'excluded' and 'selected' ids, every id labelled so far)."""
    ids: list[int] = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: file not found (--exclude)")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: cannot read the --exclude file ({err})") from None
        if text.lstrip().startswith(("{", "[")):
            ids += _json_ids(path, text)
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for token in line.split("#", 1)[0].replace(",", " ").split():
                try:
                    ids.append(int(token))
                except ValueError:
                    raise DataError(f"{path}:{number}: {token!r} is not a patch id (integer ID_PATCH)") from None
    return sorted(set(ids))


def _json_ids(path: Path, text: str) -> list[int]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if isinstance(data, dict):
        if not isinstance(data.get("selected"), list):
            raise DataError(f"{path}: a JSON --exclude file is a list of ids or a selection.json (with 'selected')")
        entries = list(data.get("excluded") or []) + [
            entry.get("id") if isinstance(entry, dict) else entry for entry in data["selected"]
        ]
    elif isinstance(data, list):
        entries = data
    else:
        raise DataError(f"{path}: a JSON --exclude file is a list of ids or a selection.json (with 'selected')")
    bad = [entry for entry in entries if isinstance(entry, bool) or not isinstance(entry, int)]
    if bad:
        raise DataError(f"{path}: {bad[0]!r} is not a patch id (integer ID_PATCH)")
    return entries


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------
def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a fine-tuned checkpoint (best.tar/last.tar: every strategy) or a backbone (checkpoint_<e>.<name>.tar, "
        "a pre-training last.tar or the authors' file: random and kcenter). Not needed for random; --smoke "
        "without it uses a tiny randomly initialised model",
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="kcenter",
        help="'random': seeded, no model; 'kcenter': farthest-first on the patches' pooled features, no labels "
        "(a backbone or a fine-tuned checkpoint); 'entropy'/'margin': the most uncertain patches, 'badge': uncertain "
        "and diverse (a fine-tuned checkpoint). Definitions: docs/select_labels.md",
    )
    parser.add_argument("--n", type=int, required=True, help="how many patches to select")
    parser.add_argument(
        "--exclude",
        type=Path,
        nargs="+",
        default=[],
        help="already-labelled patch ids: text files (ids per line) or JSON (a list, or an earlier round's "
        "selection.json: its selected and excluded ids); never selected again",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of random and badge (the others are deterministic)")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=SELECT_DATASETS,
        default="synthetic",
        help="'synthetic': the embedded data set; 'pastis': PASTIS under --data_root; 'folder': your own data "
        "(a folder written by utils.datasets.convert)",
    )
    data.add_argument(
        "--data_root",
        type=Path,
        default=None,
        help="the data set folder (synthetic: its cache folder, default: under data_cache/)",
    )
    data.add_argument(
        "--train_folds",
        type=int,
        nargs="+",
        default=None,
        help="the candidates' folds (default: dataset.json splits.train; PASTIS and synthetic: 1, the paper's)",
    )
    data.add_argument(
        "--val_folds", type=int, nargs="+", default=None, help="validation folds, never candidates (default: as above)"
    )
    data.add_argument(
        "--test_folds", type=int, nargs="+", default=None, help="test folds, never candidates (default: as above)"
    )
    data.add_argument(
        "--temporal", default=None, help="temporal subset (default: the fine-tuned checkpoint's, else every date)"
    )
    run = parser.add_argument_group("runtime")
    run.add_argument(
        "--window",
        type=int,
        default=None,
        help="side of the windows the model reads, 0 = whole patches (default: the checkpoint's training crop "
        f"size, else {GENERIC_DEFAULTS['crop_size']}; {SMOKE_CROP} with --smoke)",
    )
    run.add_argument("--batch_size", type=int, default=8, help="windows per forward pass")
    run.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA, or a CPU with native bf16)")
    run.add_argument(
        "--device", default="auto", type=device_name, help="'auto' (cuda if available, else cpu), 'cuda' or 'cpu'"
    )
    run.add_argument(
        "--trust_checkpoint", action="store_true", help="allow pickled objects in --checkpoint (only files you trust)"
    )
    run.add_argument("--output_dir", type=Path, required=True, help="where selection.json/.geojson/.png go")
    run.add_argument("--no_progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--smoke", action="store_true", help="CI: the small synthetic set (synthetic data), 8-px windows, tiny model"
    )
    return parser


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    if args.batch_size < 1 or (args.window is not None and args.window < 0):
        parser.error("--batch_size must be >= 1 and --window >= 0")
    if args.dataset != "synthetic" and args.data_root is None:
        parser.error(f"--dataset {args.dataset} needs --data_root DIR (the data set folder)")
    if args.strategy in NEEDS_MODEL and args.checkpoint is None and not args.smoke:
        parser.error(f"--strategy {args.strategy} needs --checkpoint (only random runs without a model)")
    if args.temporal:
        try:
            parse_temporal(args.temporal)
        except ValueError as err:
            parser.error(str(err))


def resolve_spec(
    args: argparse.Namespace, run_args: dict | None, sources: tuple[str, ...] = (PRIMARY_DEFAULT,)
) -> DataSpec:
    """The data, read with the model's ``sources``, and its resolved folds (flags, else dataset.json splits or
    the paper's folds)."""
    run_args = run_args or {}
    synthetic = args.dataset == "synthetic"  # its size and version: the fine-tuning run's, unless --smoke
    version = run_args.get("synthetic_version", 2) if synthetic else 2
    namespace = argparse.Namespace(
        dataset=args.dataset,
        data_root=args.data_root,
        synthetic_format="pastis",
        synthetic_version=version,
        seed=args.seed,
        smoke=args.smoke or (synthetic and bool(run_args.get("smoke"))),
        cloud_fraction=run_args.get("cloud_fraction") if synthetic else None,  # the fine-tuning run's synthetic set
        train_folds=args.train_folds,
        val_folds=args.val_folds,
        test_folds=args.test_folds,
        sources=list(sources),
    )
    spec = resolve_data_spec(namespace)
    check_disjoint_folds(spec)
    return spec


def check_data_sources(spec: DataSpec, checkpoint: Path | None) -> None:
    """The data must hold every further source the model reads (the synthetic set writes its radar itself)."""
    if not spec.extra_sources or spec.synthetic:
        return
    root = Path(spec.data_root)
    if spec.dataset == "folder":
        held = set(read_dataset_json(root).sources)
        missing = [source for source in spec.extra_sources if source not in held]
        why = f"not among the sources of {root / 'dataset.json'}"
    else:
        missing = [source for source in spec.extra_sources if not (root / data_dir(source)).is_dir()]
        why = "no " + ", ".join(f"{data_dir(source)}/" for source in missing)
    if missing:
        raise DataError(
            f"{checkpoint}: the model reads the sources {' '.join(spec.sources)}; {root} lacks {' '.join(missing)} "
            f"({why}): select on data that holds every source of the model"
        )


def default_window(args: argparse.Namespace, selection: SelectionModel | None) -> int:
    """--window, else the fine-tuning run's crop size, else the generic training crop; 8 px in --smoke."""
    if args.window is not None:
        return args.window
    if selection is not None and selection.args is not None and "crop_size" in selection.args:
        crop = int(selection.args["crop_size"] or 0)
        return SMOKE_CROP if crop and selection.args.get("smoke") else crop
    return SMOKE_CROP if args.smoke else GENERIC_DEFAULTS["crop_size"]


def choose(strategy: str, n: int, seed: int, stats: dict | None, candidates: list[int], labelled: list[int]):
    """(indices into the patch arrays, in selection order; their scores) by ``strategy``."""
    if strategy == "random":
        return [candidates[i] for i in random_order(len(candidates), n, seed)], [None] * n
    if strategy in ("entropy", "margin"):
        scores = stats[strategy][candidates]
        picks = rank_by_score(scores, n, highest_first=strategy == "entropy")
        return [candidates[i] for i in picks], [None if math.isnan(scores[i]) else float(scores[i]) for i in picks]
    if strategy == "kcenter":
        points = l2_normalise(stats["features"])
        picks, radii = kcenter_greedy(points[candidates], n, points[labelled] if labelled else None)
    else:
        points = stats["badge"]
        picks, radii = kmeanspp_seeding(points[candidates], n, seed, points[labelled] if labelled else None)
    return [candidates[i] for i in picks], radii


def select_samples(
    strategy: str,
    n: int,
    seed: int,
    dataset: PASTISDataset,
    labelled: list[int],
    checkpoint: Path | None,
    info: DataInfo,
    *,
    device: torch.device,
    batch_size: int = 8,
    amp: bool = False,
) -> tuple[list[int], list[float | None]]:
    """``n`` more of ``dataset``'s samples (every sample one window: a grid set of training crops or whole
    patches) by ``strategy``; ``labelled`` (sample indices) are never picked and, for kcenter and badge, count
    as picked. The model of ``checkpoint`` (a backbone for kcenter, a fine-tuned checkpoint for every model
    strategy) scores the samples from their imagery only; random needs none. Returns (sample indices in
    selection order, their scores): the CLI's patch selection, with samples in place of patches (the
    label-efficiency study's --selection calls it in process)."""
    stats = None
    if strategy in NEEDS_MODEL:
        raw, fine_tuned = read_checkpoint(checkpoint, trusted=False)
        if strategy in NEEDS_HEAD and not fine_tuned:
            raise CheckpointError(f"{checkpoint}: --strategy {strategy} needs a fine-tuned checkpoint")
        selection = load_selection_model(checkpoint, raw, fine_tuned, info)
        classes = trained_classes(info) if strategy in NEEDS_HEAD else None
        stats = patch_statistics(
            selection, dataset, classes, batch_size=batch_size, device=device, amp=amp, per_sample=True
        )
    candidates = sorted(set(range(len(dataset))) - set(labelled))
    if n > len(candidates):
        raise DataError(f"{dataset.root}: {n} samples asked, only {len(candidates)} unlabelled training samples left")
    return choose(strategy, n, seed, stats, candidates, sorted(labelled))


def select(args: argparse.Namespace) -> dict:
    """Run the selection and write its files; returns the selection.json record."""
    excluded = read_excluded(args.exclude)
    raw = fine_tuned = None
    if args.checkpoint is not None and args.strategy in NEEDS_MODEL:
        raw, fine_tuned = read_checkpoint(args.checkpoint, args.trust_checkpoint)
        if args.strategy in NEEDS_HEAD and not fine_tuned:
            raise CheckpointError(
                f"{args.checkpoint}: a backbone without a classification head; --strategy {args.strategy} needs a "
                "fine-tuned checkpoint (best.tar/last.tar of fine-tuning); random and kcenter take a backbone"
            )
    run_args = raw.get("args") if fine_tuned and isinstance(raw.get("args"), dict) else None
    sources = model_sources(args.checkpoint, raw, fine_tuned) if raw is not None else (PRIMARY_DEFAULT,)
    spec = resolve_spec(args, run_args, sources)
    check_data_sources(spec, args.checkpoint)
    info = info_for(spec)
    selection = None
    if args.strategy in NEEDS_MODEL:
        selection = (
            load_selection_model(args.checkpoint, raw, fine_tuned, info)
            if raw is not None
            else random_smoke_model(info, args.seed)
        )
    temporal = args.temporal if args.temporal is not None else (run_args or {}).get("temporal")
    window = default_window(args, selection)
    dataset = open_training_patches(spec, window, temporal)
    root = Path(dataset.root)
    ids = [patch.meta.patch_id for patch in dataset.patches]
    position = {patch_id: k for k, patch_id in enumerate(ids)}
    outside = [i for i in excluded if i not in position]
    if outside:
        log.warning(
            "--exclude: %d id(s) are not training-fold patches (e.g. %s): they constrain nothing",
            len(outside),
            outside[:5],
        )
    labelled = [position[i] for i in excluded if i in position]
    candidates = sorted(set(range(len(ids))) - set(labelled))
    folds = spec.split_folds("train_folds")
    if args.n > len(candidates):
        raise DataError(
            f"--n {args.n}: only {len(candidates)} candidate patches in the training folds {folds} of {root} "
            f"({len(labelled)} more already labelled, --exclude)"
        )
    stats = None
    classes = trained_classes(info) if args.strategy in NEEDS_HEAD else None
    if classes is not None and len(classes) < 2:
        raise DataError(f"{root}: fewer than two classes a model learns (all but ignore/background): no uncertainty")
    if selection is not None:
        device = resolve_device(args.device)
        amp = resolve_amp(args.amp, device)
        log.info(
            "%s: %s model%s on %d training patches (%d windows of %s px), %s",
            args.strategy,
            selection.kind,
            f" (sources {' '.join(spec.sources)})" if spec.extra_sources else "",
            len(ids),
            len(dataset),
            dataset.crop_size or "whole",
            device,
        )
        stats = patch_statistics(
            selection,
            dataset,
            classes,
            batch_size=args.batch_size,
            device=device,
            amp=amp,
            progress=not args.no_progress,
        )
    picks, scores = choose(args.strategy, args.n, args.seed, stats, candidates, labelled)
    places, crs = read_places(root)
    record = {
        "strategy": args.strategy,
        "seed": args.seed,
        "n": args.n,
        "checkpoint": str(args.checkpoint) if args.checkpoint is not None else None,
        "model": selection.kind if selection is not None else None,
        "score": SCORES[args.strategy],
        "dataset": spec.dataset,
        "data_root": str(root),
        "candidate_folds": folds,
        "validation_folds": spec.split_folds("val_folds"),
        "test_folds": spec.split_folds("test_folds"),
        "window": dataset.crop_size or 0,
        "temporal": temporal,
        **({"sources": list(spec.sources)} if spec.extra_sources else {}),
        "n_candidates": len(candidates),
        "excluded": excluded,
        "selected": [
            {
                "rank": rank,
                "id": ids[k],
                "fold": places[ids[k]].fold,
                "score": score,
                "row": places[ids[k]].row,
                "col": places[ids[k]].col,
                "footprint": places[ids[k]].geometry,
            }
            for rank, (k, score) in enumerate(zip(picks, scores), start=1)
        ],
    }
    write_outputs(args.output_dir, record, places, crs, {p.meta.patch_id: (p.height, p.width) for p in dataset.patches})
    return record


def write_outputs(out: Path, record: dict, places: dict[int, PatchPlace], crs: dict | None, sizes: dict) -> None:
    """selection.json, selection.geojson and selection.png, each written atomically."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{out}: cannot create the output folder ({err.strerror})") from None
    write_json(out / "selection.json", record)
    features = [
        {
            "type": "Feature",
            "geometry": entry["footprint"],
            "properties": {key: entry[key] for key in ("id", "rank", "score", "fold")},
        }
        for entry in record["selected"]
    ]
    collection = {"type": "FeatureCollection"} | ({"crs": crs} if crs else {}) | {"features": features}
    write_json(out / "selection.geojson", collection)
    rings, axes = outlines(places, sizes)
    chosen = {entry["id"]: entry["rank"] for entry in record["selected"]}
    excluded, candidate_folds = set(record["excluded"]), set(record["candidate_folds"])
    status = {i: patch_status(i, places[i].fold, chosen, excluded, candidate_folds) for i in rings}
    title = (
        f"{record['strategy']}: {len(chosen)} of {record['n_candidates']} candidates "
        f"(training folds {record['candidate_folds']})"
    )
    plot_patch_selection(
        [rings[i] for i in sorted(rings)],
        [status[i] for i in sorted(rings)],
        [chosen.get(i) for i in sorted(rings)],
        out / "selection.png",
        title,
        axes,
        flip_y=not axes.startswith("metadata"),
    )
    log.info("wrote %s", ", ".join(str(out / name) for name in OUTPUTS))


def patch_status(patch_id: int, fold: int, chosen: dict, excluded: set, candidate_folds: set) -> str:
    """The patch's colour key in selection.png (utils.figures.SELECTION_STYLES)."""
    if patch_id in chosen:
        return "selected"
    if patch_id in excluded:
        return "excluded"
    return "candidate" if fold in candidate_folds else "other"


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    check_flags(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)

    def run() -> None:
        record = select(args)
        rows = [{k: entry[k] for k in ("rank", "id", "fold", "score")} for entry in record["selected"]]
        log.info(
            "%s selection, %d of %d candidates\n%s",
            record["strategy"],
            len(rows),
            record["n_candidates"],
            format_table(rows, ["rank", "id", "fold", "score"]),
        )

    return guarded_main(run, None)


if __name__ == "__main__":
    sys.exit(main())
