"""Wiring shared by the entry scripts: loaders, optimiser, logging, the guarded main.

Run folders, resumable state and the checkpoint layout live in :mod:`utils.checkpoint`.

Resumability: every epoch re-seeds the global torch RNG (dropout), the mask generator, the
sampler and the dataset's random crops from ``seed`` and the epoch number, so a run resumed from
``last.tar`` at an epoch boundary continues exactly as the uninterrupted run would (on CPU).
"""

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from utils.datasets.collate import pad_collate
from utils.distributed import Runtime, seed_worker
from utils.engine import LoopOptions
from utils.errors import DataError, STCLNError
from utils.precision import compile_model, configure_matmul_precision, make_adam, resolve_amp
from utils.report import write_json  # noqa: F401 -- re-exported for the scripts
from utils.signals import Interrupted, end_children, stop_on_signals

log = logging.getLogger("stcln")
EPOCH_SEED_STRIDE = 1_000_003  # a prime: seeds of different epochs never collide for seeds < stride


def setup_logging(runtime: Runtime) -> None:
    logging.basicConfig(level=logging.INFO if runtime.is_main else logging.WARNING,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * EPOCH_SEED_STRIDE + epoch


def make_loader(dataset, batch_size: int, runtime: Runtime, *, train: bool, seed: int, workers: int) -> DataLoader:
    """Training: shuffled DistributedSampler (also with one process, for per-epoch determinism).
    Evaluation: each rank takes a strided share, no padding and no dropped samples.

    Raises:
        DataError: whole patches of different sizes (no crop) that would meet in one batch.
    """
    check_one_size(dataset, batch_size)
    if train:
        sampler = DistributedSampler(dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True, seed=seed)
    else:
        dataset = Subset(dataset, range(runtime.rank, len(dataset), runtime.world_size))
        sampler = None
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=False, num_workers=workers,
        collate_fn=pad_collate, worker_init_fn=seed_worker, pin_memory=runtime.device.type == "cuda",
    )


def check_one_size(dataset, batch_size: int) -> None:
    """Samples read as whole patches (no crop) can share a batch only if every patch has one size: refuse
    mixed sizes before the first batch, instead of a collate error there."""
    from utils.data import unwrap_subset

    base, indices = unwrap_subset(dataset)
    if batch_size < 2 or getattr(base, "crop_size", 0) is not None or not hasattr(base, "patches"):
        return
    positions = {base.entries[i][0] for i in indices} if indices is not None else range(len(base.patches))
    sizes = sorted({(base.patches[p].height, base.patches[p].width) for p in positions})
    if len(sizes) > 1:
        raise DataError(f"{base.root}: whole patches of {len(sizes)} sizes ({', '.join(f'{h}x{w}' for h, w in sizes[:4])}) "
                        f"cannot share a batch of {batch_size}: pass --crop_size N (or batch size 1)")


def start_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Re-seed everything random that an epoch uses (see module docstring)."""
    torch.manual_seed(epoch_seed(seed, epoch))
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    dataset = loader.dataset.dataset if isinstance(loader.dataset, Subset) else loader.dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def wrap_model(model: nn.Module, runtime: Runtime, compile_backend: str | None = None,
               grad_checkpoint: bool = False, fast_dropout: bool = False) -> nn.Module:
    """Move to the device, set the runtime options (--grad_checkpoint, --fast_dropout), ``torch.compile``
    with ``compile_backend`` (any device; None = eager), wrap in DDP.

    The result is DDP(compiled(model)) under torchrun; :func:`utils.checkpoint.unwrap` undoes any nesting.
    """
    model = model.to(runtime.device)
    model.backbone.set_grad_checkpointing(grad_checkpoint)
    model.backbone.set_fast_dropout(fast_dropout)
    if compile_backend:
        model = compile_model(model, compile_backend)
    if runtime.distributed:
        model = DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    return model


def compile_backend(args: argparse.Namespace) -> str | None:
    """The torch.compile backend the flags ask for (None: no --compile)."""
    return args.compile_backend if args.compile else None


def make_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """Adam over the trainable parameters (frozen ones, e.g. --freeze_backbone, are left out).

    Fused on CUDA unless --strict_fp32 (utils.precision)."""
    return make_adam([p for p in model.parameters() if p.requires_grad], args.lr, args.weight_decay, args.strict_fp32)


def loop_options(args: argparse.Namespace, runtime: Runtime, *, train: bool = True) -> LoopOptions:
    """The loops' options from the flags: resolves --amp for the device and sets TF32 (both said once)."""
    configure_matmul_precision(runtime.device, args.strict_fp32)
    return LoopOptions(runtime.device, args.grad_clip if train else None, resolve_amp(args.amp, runtime.device),
                       args.skip_nonfinite and train, not args.no_progress, runtime.distributed)


def open_writer(out: Path, runtime: Runtime):
    """TensorBoard writer on rank 0 (None elsewhere)."""
    if not runtime.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out / "tb"))


def one_line_errors(run: Callable[[], None]) -> int:
    """Run ``run``; return 0, or 2 after printing an expected error (:class:`STCLNError`) as one
    ``error: ...`` line on stderr (``STCLN_DEBUG=1`` re-raises it). Any other exception is a bug and
    keeps its traceback. For a body that runs other scripts' mains in its process (the experiments),
    which install their own signal handlers: :func:`guarded_main` adds those."""
    try:
        run()
    except STCLNError as err:  # expected errors only: anything else is a bug and keeps its traceback
        if os.environ.get("STCLN_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def guarded_main(run: Callable[[], None], output_dir: Path | None) -> int:
    """Run a script body; return its exit status.

    Expected errors (:class:`STCLNError`) become one ``error: ...`` line and status 2
    (:func:`one_line_errors`); any other exception is a bug and keeps its traceback. Ctrl-C / SIGTERM stop the run cleanly (utils/signals.py)
    with status 130 / 143 and a hint to ``--resume``.
    """
    with stop_on_signals():
        try:
            status = one_line_errors(run)
        except Interrupted as stop:
            last = Path(output_dir) / "last.tar" if output_dir is not None else None
            hint = f"; {last} holds the last saved epoch: continue with --resume" if last and last.is_file() else ""
            print(f"stopped by {stop}{hint}", file=sys.stderr)
            status = stop.exit_status
        else:
            return status
        # the traceback is gone: the DataLoader has shut its workers down; end any it could not (utils/signals.py)
        end_children()
    return status


__all__ = [
    "compile_backend", "epoch_seed", "guarded_main", "loop_options", "make_loader", "make_optimizer", "one_line_errors",
    "open_writer", "setup_logging", "start_epoch", "wrap_model", "write_json",
]
