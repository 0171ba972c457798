"""The training and evaluation loops shared by every script.

Three loops: :func:`pretrain_one_epoch`, :func:`train_one_epoch`, :func:`evaluate`. Each takes
explicit arguments (no ``args``), moves batches to the device, and returns plain numbers.
"""

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from models import STCLNConfig
from utils.errors import STCLNError
from utils.masking import MaskingConfig, build_mask
from utils.metrics import ConfusionMatrix
from utils.pretext_baselines import baseline_sse
from utils.signals import check_stop

log = logging.getLogger("stcln")


@dataclass
class LoopOptions:
    """How a loop runs: device, precision, clipping, what to do with non-finite values."""

    device: torch.device
    grad_clip: float | None = None
    amp: bool = False
    skip_nonfinite: bool = False
    progress: bool = True
    distributed: bool = False


def autocast(options: LoopOptions):
    """bf16 autocast on CUDA when AMP is on; a no-op otherwise."""
    if options.amp and options.device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def to_device(batch: dict, device: torch.device) -> dict:
    """Move every tensor of a collated batch to ``device``."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def model_inputs(batch: dict, config: STCLNConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, positions, pad_mask) for the model; positions follow ``config.positions``."""
    positions = batch["days"] if config.positions == "doy" else batch["positions"]
    return batch["image"], positions, batch["pad_mask"]


def check_finite_input(batch: dict, skip: bool) -> bool:
    """True if the images are finite. Otherwise raise, naming the samples (or warn if ``skip``)."""
    finite = torch.isfinite(batch["image"]).flatten(1).all(dim=1)
    if bool(finite.all()):
        return True
    bad = [sample_id for sample_id, ok in zip(batch["id"], finite.tolist()) if not ok]
    message = f"non-finite values (NaN/inf) in input sample(s) {bad}"
    if not skip:
        raise STCLNError(message + " (pass --skip_nonfinite to skip such batches)")
    log.warning("skipping batch: %s", message)
    return False


def optimizer_step(loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float | None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def nonfinite_loss(loss: torch.Tensor, batch: dict, skip: bool) -> bool:
    """True if the loss is NaN/inf: raise naming the batch, or warn if ``skip``."""
    if bool(torch.isfinite(loss)):
        return False
    message = f"non-finite loss {loss.item()} on batch with samples {list(batch['id'])}"
    if not skip:
        raise STCLNError(message + " (pass --skip_nonfinite to skip such batches)")
    log.warning("skipping batch: %s", message)
    return True


def reduce_sums(sums: dict[str, float], options: LoopOptions) -> dict[str, float]:
    """Sum per-process totals over all ranks (identity without DDP)."""
    if not options.distributed:
        return sums
    keys = sorted(sums)
    values = torch.tensor([float(sums[k]) for k in keys], dtype=torch.float64, device=options.device)
    dist.all_reduce(values)
    return dict(zip(keys, values.tolist()))


def require_steps(sums: dict[str, float], epoch: int, what: str) -> None:
    """An epoch that made no optimisation step is an error, never a silent untrained model."""
    if sums["batches"] == 0:
        raise STCLNError(f"{what} epoch {epoch + 1}: no optimisation step; all {int(sums['skipped'])} batches were skipped "
                         "(no labelled pixel in any batch, or non-finite values with --skip_nonfinite)")


def progress(loader, desc: str, options: LoopOptions):
    """tqdm over ``loader`` that stops the run between batches after Ctrl-C/SIGTERM (utils/signals.py)."""
    return tqdm(_stop_checked(loader), total=len(loader), desc=desc, dynamic_ncols=True, leave=False,
                disable=not options.progress, mininterval=1.0)


def _stop_checked(loader):
    for batch in loader:
        check_stop()
        yield batch


def pretrain_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    *,
    config: STCLNConfig,
    masking: MaskingConfig,
    red_index: int | None = None,
    nir_index: int | None = None,
    generator: torch.Generator,
    options: LoopOptions,
) -> dict[str, float]:
    """One epoch of masked reconstruction. Returns mean loss, masked fraction and samples/s.

    Also the pretext diagnostics, each an MSE over every masked cell of the epoch (the loss's
    units): ``pretext_model`` (the model), ``pretext_neighbour_mean`` and ``pretext_temporal_interp``
    (the non-learned baselines of ``utils.pretext_baselines`` on the same cells).
    """
    model.train()
    sums = {"loss": 0.0, "batches": 0.0, "masked": 0.0, "cells": 0.0, "samples": 0.0, "skipped": 0.0}
    # squared-error sums over masked cells, kept on the device (float64: epochs hold many cells)
    pretext = dict.fromkeys(("model", "neighbour_mean", "temporal_interp", "masked"),
                            torch.zeros((), dtype=torch.float64, device=options.device))
    start = time.perf_counter()
    bar = progress(loader, f"pretrain {epoch}", options)
    for batch in bar:
        batch = to_device(batch, options.device)
        if not check_finite_input(batch, options.skip_nonfinite):
            sums["skipped"] += 1
            continue
        x, positions, pad_mask = model_inputs(batch, config)
        mask = build_mask(x, batch["ndvi"], pad_mask, masking, red_index, nir_index, generator)
        with autocast(options):
            loss = model(x, positions, mask, pad_mask)["loss"]
        if nonfinite_loss(loss, batch, options.skip_nonfinite):
            sums["skipped"] += 1
            continue
        optimizer_step(loss, model, optimizer, options.grad_clip)
        n_masked = mask.sum()
        step = baseline_sse(x, mask, batch["days"], pad_mask) | {"model": loss.detach().float() * n_masked, "masked": n_masked}
        pretext = {key: pretext[key] + step[key] for key in pretext}
        valid_cells = (~pad_mask).sum() * x.shape[-1] * x.shape[-2]
        sums["loss"] += loss.item()
        sums["batches"] += 1
        sums["masked"] += mask.sum().item()
        sums["cells"] += valid_cells.item()
        sums["samples"] += x.shape[0]
        bar.set_postfix(loss=f"{loss.item():.4f}", sps=f"{sums['samples'] / (time.perf_counter() - start):.1f}")
    sums = reduce_sums(sums | {f"pretext_{key}": float(value) for key, value in pretext.items()}, options)
    masked = max(sums.pop("pretext_masked"), 1.0)
    require_steps(sums, epoch, "pre-training")
    if sums["masked"] == 0:  # the loss would be 0 and nothing learnt
        raise STCLNError(f"pre-training epoch {epoch + 1}: no cell was masked (--mask_ratio {masking.ratio}; NDVI gate "
                         f"{f'> {masking.ndvi_threshold} on > {masking.min_fraction:g} of the pixels' if masking.ndvi_gate else 'off'}"
                         "): lower --ndvi_threshold / --veg_fraction or pass --ndvi_threshold none")
    return {
        "loss": sums["loss"] / max(sums["batches"], 1),
        "masked_fraction": sums["masked"] / max(sums["cells"], 1),
        "samples_per_s": sums["samples"] / (time.perf_counter() - start),
        "skipped_batches": sums["skipped"],
    } | {key: value / masked for key, value in sums.items() if key.startswith("pretext_")}


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged with per-class weights; weight-0 classes (ignored) never count.

    (B, K, H, W) logits, (B, H, W) target, (K,) weights. Callers skip batches whose total
    weight is 0, where the reference would have produced NaN (docs/method.md §5).
    """
    per_pixel = F.cross_entropy(logits.float(), target, reduction="none")  # (B, H, W)
    weight = class_weight[target]
    return (per_pixel * weight).sum() / weight.sum().clamp_min(torch.finfo(weight.dtype).tiny)


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    *,
    config: STCLNConfig,
    class_weight: torch.Tensor,
    options: LoopOptions,
) -> dict[str, float]:
    """One epoch of supervised segmentation. Batches without any labelled pixel are skipped."""
    model.train()
    class_weight = class_weight.to(options.device)
    sums = {"loss": 0.0, "batches": 0.0, "samples": 0.0, "skipped": 0.0}
    start = time.perf_counter()
    bar = progress(loader, f"train {epoch}", options)
    for batch in bar:
        batch = to_device(batch, options.device)
        labelled = class_weight[batch["label"]].sum()
        if options.distributed:  # every rank must skip together, or DDP would wait forever
            dist.all_reduce(labelled)
        if labelled.item() == 0 or not check_finite_input(batch, options.skip_nonfinite):
            sums["skipped"] += 1
            continue
        x, positions, pad_mask = model_inputs(batch, config)
        with autocast(options):
            logits = model(x, positions, pad_mask)
        loss = weighted_cross_entropy(logits, batch["label"], class_weight)
        if nonfinite_loss(loss, batch, options.skip_nonfinite):
            sums["skipped"] += 1
            continue
        optimizer_step(loss, model, optimizer, options.grad_clip)
        sums["loss"] += loss.item()
        sums["batches"] += 1
        sums["samples"] += x.shape[0]
        bar.set_postfix(loss=f"{loss.item():.4f}", sps=f"{sums['samples'] / (time.perf_counter() - start):.1f}")
    sums = reduce_sums(sums, options)
    require_steps(sums, epoch, "training")
    return {
        "loss": sums["loss"] / max(sums["batches"], 1),
        "samples_per_s": sums["samples"] / (time.perf_counter() - start),
        "skipped_batches": sums["skipped"],
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    *,
    config: STCLNConfig,
    num_classes: int,
    ignore_index: int | None,
    options: LoopOptions,
    on_batch=None,
) -> ConfusionMatrix:
    """Accumulate the confusion matrix of argmax predictions over ``loader`` (all ranks summed).

    ``on_batch(batch, pred)`` is called for every batch (e.g. to keep a few prediction maps).
    """
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=options.device)
    for batch in progress(loader, "eval", options):
        batch = to_device(batch, options.device)
        check_finite_input(batch, skip=False)
        x, positions, pad_mask = model_inputs(batch, config)
        with autocast(options):
            pred = model(x, positions, pad_mask).argmax(dim=1)
        matrix.update(pred, batch["label"])
        if on_batch is not None:
            on_batch(batch, pred)
    if options.distributed:
        matrix.all_reduce()
    return matrix


@torch.no_grad()
def reconstruct_preview(model: nn.Module, dataset, config: STCLNConfig, masking: MaskingConfig, info, device, seed: int):
    """Mask and reconstruct the first sample of ``dataset`` with a fixed generator (for figures).

    Returns (image (T, C, H, W), mask (T, H, W), reconstruction (T, C, H, W)) on the CPU.
    """
    from utils.datasets.collate import pad_collate

    batch = to_device(pad_collate([dataset[0]]), device)
    x, positions, pad_mask = model_inputs(batch, config)
    generator = torch.Generator(device=device).manual_seed(seed)
    mask = build_mask(x, batch["ndvi"], pad_mask, masking, info.red_index, info.nir_index, generator)
    was_training = model.training
    model.eval()
    pred = model(x, positions, mask, pad_mask)["pred"]
    model.train(was_training)
    return x[0].cpu(), mask[0].cpu(), pred[0].float().cpu()
