"""The training and evaluation loops shared by every script.

Three loops: :func:`pretrain_one_epoch`, :func:`train_one_epoch`, :func:`evaluate`. Each takes
explicit arguments (no ``args``), moves batches to the device, and returns plain numbers.
"""

import logging
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from models import STCLNConfig
from utils.errors import STCLNError
from utils.masking import MaskingConfig, build_mask, build_source_mask
from utils.metrics import ConfusionMatrix
from utils.precision import autocast_context
from utils.pretext_baselines import baseline_sse
from utils.signals import check_stop, deferred_stop

log = logging.getLogger("stcln")


POSTFIX_EVERY = 25  # steps between progress-bar postfix updates (each one reads the device once)


@dataclass
class LoopOptions:
    """How a loop runs: device, precision, clipping, what to do with non-finite values.

    ``amp`` is the resolved decision (``utils.precision.resolve_amp``): True runs bf16 autocast on
    ``device`` (CUDA or CPU)."""

    device: torch.device
    grad_clip: float | None = None
    amp: bool = False
    skip_nonfinite: bool = False
    progress: bool = True
    distributed: bool = False


def autocast(options: LoopOptions):
    """bf16 autocast on the loop's device when AMP is on; a disabled autocast otherwise."""
    return autocast_context(options.amp, options.device)


def to_device(batch: dict, device: torch.device) -> dict:
    """Move every tensor of a collated batch to ``device``."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def model_inputs(batch: dict, config: STCLNConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, positions, pad_mask) for the model; positions follow ``config.positions``."""
    positions = batch["days"] if config.positions == "doy" else batch["positions"]
    return batch["image"], positions, batch["pad_mask"]


def extra_inputs(batch: dict, config: STCLNConfig) -> dict | None:
    """The further sources for the model, ``{source: (image_s, positions_s, pad_mask_s)}`` from the
    batch keys ``image_<s>``, ``positions_<s>`` or ``days_<s>`` (``config.positions``) and
    ``pad_mask_<s>`` (utils/datasets/CONTRACT.md); None for a single-source model."""
    brought = [key[len("image_") :] for key in batch if key.startswith("image_")]
    unused = [name for name in brought if name not in config.extra_sources]
    if unused:  # never a silent single-source result on multi-source data
        raise STCLNError(
            f"the data brings the sources {unused} that the model (extra sources {list(config.extra_sources)}) "
            "does not take: pass the --sources the model was built with"
        )
    if not config.extra_sources:
        return None
    missing = [name for name in config.extra_sources if f"image_{name}" not in batch]
    if missing:
        raise STCLNError(
            f"the model takes the extra sources {list(config.extra_sources)} but the data brings no "
            f"{', '.join(f'image_{name}' for name in missing)}: pass the same --sources as the model"
        )
    key = "days" if config.positions == "doy" else "positions"
    return {
        name: (batch[f"image_{name}"], batch[f"{key}_{name}"], batch[f"pad_mask_{name}"])
        for name in config.extra_sources
    }


def extra_kwargs(extra: dict | None, **more) -> dict:
    """Keyword arguments that pass the extra sources to a model; none at all for a single-source model,
    so its calls stay exactly what they were."""
    return {} if extra is None else {"extra": extra, **more}


def primary_mask(
    batch: dict,
    x: torch.Tensor,
    pad_mask: torch.Tensor,
    masking: MaskingConfig,
    red_index,
    nir_index,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """The primary source's mask: NDVI-gated when the batch has ``ndvi`` (optical), every frame
    eligible when it has none (a radar primary, CONTRACT.md)."""
    valid = batch.get("valid")
    if "ndvi" in batch:
        return build_mask(x, batch["ndvi"], pad_mask, masking, red_index, nir_index, generator, valid)
    return build_source_mask(x, pad_mask, masking, generator, valid)


def finite_samples(batch: dict) -> torch.Tensor:
    """(B,) bool: every value of the sample's images (every source) is finite."""
    images = [batch["image"]] + [value for key, value in batch.items() if key.startswith("image_")]
    return torch.stack([torch.isfinite(image).flatten(1).all(dim=1) for image in images]).all(dim=0)


def _local_and_global(local: torch.Tensor, options: LoopOptions) -> tuple[list[float], list[float]]:
    """Read a flag vector of this rank and its sum over all ranks with one host synchronisation."""
    local = local.to(torch.float64)
    total = local.clone()
    if options.distributed:
        dist.all_reduce(total)
    values = torch.cat([local, total]).tolist()
    return values[: local.numel()], values[local.numel() :]


def _nonfinite(message: str, here: bool, options: LoopOptions) -> None:
    """Raise (or, with ``--skip_nonfinite``, warn) about a non-finite batch seen here or on another rank."""
    if not here:
        message = "non-finite values on another process in this step"
    if not options.skip_nonfinite:
        raise STCLNError(message + " (pass --skip_nonfinite to skip such batches)")
    log.warning("skipping batch: %s", message)


def step_inputs_ok(batch: dict, options: LoopOptions, labelled: torch.Tensor | None = None) -> bool:
    """Decide, before the forward pass, whether every rank runs this step.

    One fused flag vector (non-finite samples, labelled weight) is summed over the ranks and read
    once, so under DDP all ranks skip together (one skipping alone would hang the others in the
    gradient all-reduce). A step without any labelled pixel is skipped silently; non-finite
    images raise, naming the samples, or are skipped with a warning under ``--skip_nonfinite``.
    """
    finite = finite_samples(batch)  # (B,)
    labelled = torch.ones((), device=finite.device) if labelled is None else labelled
    (bad_here, _), (bad_anywhere, labelled_anywhere) = _local_and_global(
        torch.stack([(~finite).sum(), labelled]), options
    )
    if labelled_anywhere == 0:
        return False
    if bad_anywhere == 0:
        return True
    bad = [sample_id for sample_id, ok in zip(batch["id"], finite.tolist()) if not ok]
    _nonfinite(f"non-finite values (NaN/inf) in input sample(s) {bad}", bad_here > 0, options)
    return False


def step_loss_ok(loss: torch.Tensor, batch: dict, options: LoopOptions) -> bool:
    """After the forward pass: is the loss finite on every rank? (Raise naming the batch, or warn and skip.)"""
    (bad_here,), (bad_anywhere,) = _local_and_global((~torch.isfinite(loss.detach())).view(1), options)
    if bad_anywhere == 0:
        return True
    _nonfinite(
        f"non-finite loss {loss.item() if bad_here else ''} on batch with samples {list(batch['id'])}",
        bad_here > 0,
        options,
    )
    return False


def check_finite_input(batch: dict) -> None:
    """Evaluation: raise naming the samples if an image holds NaN/inf (local to this rank: no collective)."""
    finite = finite_samples(batch)
    if not bool(finite.all()):
        bad = [sample_id for sample_id, ok in zip(batch["id"], finite.tolist()) if not ok]
        raise STCLNError(f"non-finite values (NaN/inf) in input sample(s) {bad}")


def optimizer_step(
    loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float | None
) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def reduce_sums(sums: torch.Tensor, options: LoopOptions) -> list[float]:
    """Sum a vector of per-process device totals over all ranks and read it once (identity without DDP)."""
    sums = sums.to(torch.float64)
    if options.distributed:
        dist.all_reduce(sums)
    return sums.tolist()


def require_steps(sums: dict[str, float], epoch: int, what: str) -> None:
    """An epoch that made no optimisation step is an error, never a silent untrained model."""
    if sums["batches"] == 0:
        raise STCLNError(
            f"{what} epoch {epoch + 1}: no optimisation step; all {int(sums['skipped'])} batches were skipped "
            "(no labelled pixel in any batch, or non-finite values with --skip_nonfinite)"
        )


def progress(loader, desc: str, options: LoopOptions):
    """tqdm over ``loader`` that stops the run between batches after Ctrl-C/SIGTERM (utils/signals.py)."""
    return tqdm(
        _stop_checked(loader),
        total=len(loader),
        desc=desc,
        dynamic_ncols=True,
        leave=False,
        disable=not options.progress,
        mininterval=1.0,
    )


def _stop_checked(loader):
    """The loader's batches, stopping between them after a stop signal.

    A stop signal arriving inside the DataLoader's iterator (starting workers, handing them indices,
    waiting for a batch) is deferred and raised once the call has returned: raised inside it, the
    interrupt could leave an index queue's lock taken (``Condition.__enter__`` had acquired it), and
    the DataLoader's shutdown then waited forever to put its end-of-work message into that queue
    (the run hung after its "stopped by" line). The wait is at most a batch, or the DataLoader's 5 s
    check for dead workers; a second Ctrl-C still stops at once. A stop signal sent to the whole job
    also kills the workers: the loader then raises "worker exited unexpectedly", which is the stop's
    doing and becomes the stop (Interrupted), never a traceback over it."""
    try:
        with deferred_stop():
            batches = iter(loader)
        while True:
            with deferred_stop():  # raises Interrupted on the way out if a stop signal came meanwhile
                try:
                    batch = next(batches)
                except StopIteration:
                    return
            yield batch
    except RuntimeError:
        check_stop()  # a recorded stop signal explains the dead workers: raise it instead
        raise


def update_postfix(
    bar, step: int, loss_sum: torch.Tensor, batches: int, samples: int, start: float, options: LoopOptions
) -> None:
    """Mean loss and samples/s on the progress bar every POSTFIX_EVERY steps (one device read each)."""
    if options.progress and batches and step % POSTFIX_EVERY == 0:
        bar.set_postfix(loss=f"{loss_sum.item() / batches:.4f}", sps=f"{samples / (time.perf_counter() - start):.1f}")


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
    hide_invalid: bool = False,
) -> dict[str, float]:
    """One epoch of masked reconstruction. Returns mean loss, masked fraction and samples/s.

    Also the pretext diagnostics, each an MSE over every masked cell of the epoch (the loss's
    units): ``pretext_model`` (the model), ``pretext_neighbour_mean`` and ``pretext_temporal_interp``
    (the non-learned baselines of ``utils.pretext_baselines`` on the same cells).

    Loss and counters stay on the device and are read once at the end of the epoch; the only
    per-step reads are the skip decisions (:func:`step_inputs_ok`, :func:`step_loss_ok`).

    Batches with per-cell validity (``valid``, cloud masks) never reconstruct an invalid cell; with
    ``hide_invalid`` invalid cells are also replaced by the mask token in the input (and hidden
    from the baselines).

    With extra sources (``config.extra_sources``) every source is masked on its own dates
    (:func:`utils.masking.build_source_mask`: no NDVI gate) and ``loss`` is the model's multi-source
    loss; ``masked_fraction`` and the ``pretext_*`` entries stay those of the primary source, and
    each further source s adds ``masked_fraction_<s>``, ``pretext_model_<s>``,
    ``pretext_neighbour_mean_<s>``, ``pretext_temporal_interp_<s>`` (``pretext_model*`` is then each
    source's own masked-cell MSE).
    """
    model.train()
    suffixes = [""] + [f"_{name}" for name in config.extra_sources]
    keys = ["loss", "batches", "samples"] + [
        f"{what}{suffix}"
        for suffix in suffixes
        for what in ("masked", "cells", "pretext_model", "pretext_neighbour_mean", "pretext_temporal_interp")
    ]
    # sums kept on the device (float64: epochs hold many cells), read once at the end of the epoch
    sums = torch.zeros(len(keys), dtype=torch.float64, device=options.device)
    batches = samples = skipped = 0
    start = time.perf_counter()
    bar = progress(loader, f"pretrain {epoch}", options)
    for step, batch in enumerate(bar, 1):
        batch = to_device(batch, options.device)
        if not step_inputs_ok(batch, options):
            skipped += 1
            continue
        x, positions, pad_mask = model_inputs(batch, config)
        extra = extra_inputs(batch, config)
        valid = batch.get("valid")
        mask = primary_mask(batch, x, pad_mask, masking, red_index, nir_index, generator)
        extra_masks = {
            name: build_source_mask(image, pad, masking, generator) for name, (image, _, pad) in (extra or {}).items()
        }
        # cells the model never sees (--hide_invalid, or a use_valid_mask model): the baselines do not see them either
        hidden = ~valid if (hide_invalid or config.use_valid_mask) and valid is not None else None
        with autocast(options):
            out = model(x, positions, mask, pad_mask, hidden, valid, **extra_kwargs(extra, extra_masks=extra_masks))
        loss = out["loss"]
        if not step_loss_ok(loss, batch, options):
            skipped += 1
            continue
        optimizer_step(loss, model, optimizer, options.grad_clip)
        # per source: (series, mask, days, pad_mask, hidden, its own masked-cell MSE)
        per_source = [(x, mask, batch["days"], pad_mask, hidden, out["losses"]["primary"] if extra else loss)]
        for name, (image, _, pad) in (extra or {}).items():
            per_source.append((image, extra_masks[name], batch[f"days_{name}"], pad, None, out["losses"][name]))
        terms = [loss.detach().to(sums.dtype), sums.new_tensor(1.0), sums.new_tensor(float(x.shape[0]))]
        for image, source_mask, days, pad, unseen, source_loss in per_source:
            n_masked = source_mask.sum().to(sums.dtype)
            baselines = baseline_sse(image, source_mask, days, pad, unseen)
            terms += [
                n_masked,
                ((~pad).sum() * (image.shape[-1] * image.shape[-2])).to(sums.dtype),
                source_loss.detach().to(sums.dtype) * n_masked,
                baselines["neighbour_mean"].to(sums.dtype),
                baselines["temporal_interp"].to(sums.dtype),
            ]
        sums += torch.stack(terms)
        batches += 1
        samples += x.shape[0]
        update_postfix(bar, step, sums[0], batches, samples, start, options)
    totals = dict(zip(keys, reduce_sums(sums, options)))
    require_steps({"batches": totals["batches"], "skipped": skipped}, epoch, "pre-training")
    if sum(totals[f"masked{suffix}"] for suffix in suffixes) == 0:  # the loss would be 0 and nothing learnt
        raise STCLNError(
            f"pre-training epoch {epoch + 1}: no cell was masked (--mask_ratio {masking.ratio}; NDVI gate "
            f"{f'> {masking.ndvi_threshold} on > {masking.min_fraction:g} of the pixels' if masking.ndvi_gate else 'off'}"
            "): lower --ndvi_threshold / --veg_fraction or pass --ndvi_threshold none"
        )
    if totals["masked"] == 0:
        log.warning(
            "pre-training epoch %d: no cell of the primary source was masked (NDVI gate); only the other "
            "sources were reconstructed",
            epoch + 1,
        )
    stats = {
        "loss": totals["loss"] / max(totals["batches"], 1),
        "masked_fraction": totals["masked"] / max(totals["cells"], 1),
        "samples_per_s": totals["samples"] / (time.perf_counter() - start),
        "skipped_batches": skipped,  # the same on every rank: skip decisions are global
    }
    for suffix in suffixes:
        masked = max(totals[f"masked{suffix}"], 1.0)
        if suffix:
            stats[f"masked_fraction{suffix}"] = totals[f"masked{suffix}"] / max(totals[f"cells{suffix}"], 1)
        for what in ("model", "neighbour_mean", "temporal_interp"):
            stats[f"pretext_{what}{suffix}"] = totals[f"pretext_{what}{suffix}"] / masked
    return stats


SPATIAL_KEYS = ("image", "ndvi", "valid", "label")  # the batch entries whose last two dims are (H, W)


def dihedral_augment(batch: dict, generator: torch.Generator | None = None) -> dict:
    """Each sample's crop turned by a random element of the square's symmetry group (``--augment``).

    One draw per sample from the 8 rotations/reflections (4 when crops are not square: identity and
    the flips), applied alike to ``image`` (T, C, H, W) and every further source's ``image_<s>``, ``ndvi`` and ``valid`` (T, H, W) and
    ``label`` (H, W). Draws come from the global generator, which ``start_epoch`` re-seeds per epoch,
    so a resumed run draws what the uninterrupted one did. Dates, days and padding are untouched.
    """
    height, width = batch["label"].shape[-2:]
    n = 8 if height == width else 4
    draws = torch.randint(0, n, (batch["label"].shape[0],), generator=generator).tolist()
    out = dict(batch)
    for key in [key for key in batch if key in SPATIAL_KEYS or key.startswith("image_")]:  # image_<s>: further sources
        samples = []
        for value, draw in zip(batch[key], draws):  # value: the sample's tensor, (..., H, W)
            if n == 8:
                value = torch.rot90(value, draw % 4, dims=(-2, -1))
                value = value.flip(-1) if draw >= 4 else value
            else:
                value = value.flip(-2) if draw & 1 else value
                value = value.flip(-1) if draw & 2 else value
            samples.append(value)
        out[key] = torch.stack(samples)
    return out


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
    augment: bool = False,
) -> dict[str, float]:
    """One epoch of supervised segmentation. Batches without any labelled pixel are skipped.
    With ``augment`` every crop is turned by a random rotation/reflection (:func:`dihedral_augment`).

    Loss and counters stay on the device and are read once at the end of the epoch.
    """
    model.train()
    class_weight = class_weight.to(options.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=options.device)
    batches = samples = skipped = 0
    start = time.perf_counter()
    bar = progress(loader, f"train {epoch}", options)
    for step, batch in enumerate(bar, 1):
        batch = to_device(dihedral_augment(batch) if augment else batch, options.device)
        if not step_inputs_ok(batch, options, labelled=class_weight[batch["label"]].sum()):
            skipped += 1
            continue
        x, positions, pad_mask = model_inputs(batch, config)
        with autocast(options):
            logits = model(x, positions, pad_mask, batch.get("valid"), **extra_kwargs(extra_inputs(batch, config)))
        loss = weighted_cross_entropy(logits, batch["label"], class_weight)
        if not step_loss_ok(loss, batch, options):
            skipped += 1
            continue
        optimizer_step(loss, model, optimizer, options.grad_clip)
        loss_sum += loss.detach().to(loss_sum.dtype)
        batches += 1
        samples += x.shape[0]
        update_postfix(bar, step, loss_sum, batches, samples, start, options)
    loss_total, batches, samples = reduce_sums(
        torch.stack([loss_sum, loss_sum.new_tensor(batches), loss_sum.new_tensor(samples)]), options
    )
    require_steps({"batches": batches, "skipped": skipped}, epoch, "training")
    return {
        "loss": loss_total / max(batches, 1),
        "samples_per_s": samples / (time.perf_counter() - start),
        "skipped_batches": skipped,  # the same on every rank: skip decisions are global
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
        check_finite_input(batch)
        x, positions, pad_mask = model_inputs(batch, config)
        with autocast(options):
            pred = model(
                x, positions, pad_mask, batch.get("valid"), **extra_kwargs(extra_inputs(batch, config))
            ).argmax(dim=1)
        matrix.update(pred, batch["label"])
        if on_batch is not None:
            on_batch(batch, pred)
    if options.distributed:
        matrix.all_reduce()
    return matrix


@torch.no_grad()
def reconstruct_preview(
    model: nn.Module, dataset, config: STCLNConfig, masking: MaskingConfig, info, device, seed: int
):
    """Mask and reconstruct the first sample of ``dataset`` with a fixed generator (for figures).

    Returns (image (T, C, H, W), mask (T, H, W), reconstruction (T, C, H, W)) on the CPU.
    """
    from utils.datasets.collate import pad_collate

    batch = to_device(pad_collate([dataset[0]]), device)
    x, positions, pad_mask = model_inputs(batch, config)
    extra = extra_inputs(batch, config)
    generator = torch.Generator(device=device).manual_seed(seed)
    valid = batch.get("valid")
    mask = primary_mask(batch, x, pad_mask, masking, info.red_index, info.nir_index, generator)
    extra_masks = {
        name: build_source_mask(image, pad, masking, generator) for name, (image, _, pad) in (extra or {}).items()
    }
    was_training = model.training
    model.eval()
    pred = model(x, positions, mask, pad_mask, None, valid, **extra_kwargs(extra, extra_masks=extra_masks))["pred"]
    model.train(was_training)
    return x[0].cpu(), mask[0].cpu(), pred[0].float().cpu()
