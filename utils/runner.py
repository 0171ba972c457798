"""Wiring shared by the entry scripts: loaders, optimiser, resume, logging, checkpoints.

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

from models import STCLNConfig
from utils.args import args_dict, dump_args
from utils.checkpoint import load_checkpoint, load_state_checked, unwrap
from utils.datasets.collate import pad_collate
from utils.distributed import Runtime, seed_worker
from utils.engine import LoopOptions
from utils.errors import CheckpointError, STCLNError
from utils.precision import compile_model, configure_matmul_precision, make_adam, resolve_amp
from utils.report import write_json  # noqa: F401 -- re-exported for the scripts
from utils.signals import Interrupted, stop_on_signals

log = logging.getLogger("stcln")
EPOCH_SEED_STRIDE = 1_000_003  # a prime: seeds of different epochs never collide for seeds < stride


def setup_logging(runtime: Runtime) -> None:
    logging.basicConfig(level=logging.INFO if runtime.is_main else logging.WARNING,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * EPOCH_SEED_STRIDE + epoch


def make_loader(dataset, batch_size: int, runtime: Runtime, *, train: bool, seed: int, workers: int) -> DataLoader:
    """Training: shuffled DistributedSampler (also with one process, for per-epoch determinism).
    Evaluation: each rank takes a strided share, no padding and no dropped samples."""
    if train:
        sampler = DistributedSampler(dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True, seed=seed)
    else:
        dataset = Subset(dataset, range(runtime.rank, len(dataset), runtime.world_size))
        sampler = None
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=False, num_workers=workers,
        collate_fn=pad_collate, worker_init_fn=seed_worker, pin_memory=runtime.device.type == "cuda",
    )


def start_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Re-seed everything random that an epoch uses (see module docstring)."""
    torch.manual_seed(epoch_seed(seed, epoch))
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    dataset = loader.dataset.dataset if isinstance(loader.dataset, Subset) else loader.dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def wrap_model(model: nn.Module, runtime: Runtime, compile_backend: str | None = None,
               grad_checkpoint: bool = False) -> nn.Module:
    """Move to the device, ``torch.compile`` with ``compile_backend`` (any device; None = eager), wrap in DDP.

    The result is DDP(compiled(model)) under torchrun; :func:`utils.checkpoint.unwrap` undoes any nesting.
    """
    model = model.to(runtime.device)
    model.backbone.set_grad_checkpointing(grad_checkpoint)
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


RUN_FILES = ("last.tar", "best.tar", "checkpoint_*.tar", "summary.json", "tb/events.out.tfevents.*")


def previous_run_files(out: Path) -> list[Path]:
    """Files of an earlier training run in ``out`` (checkpoints, exports, summary, TensorBoard events)."""
    return sorted(path for pattern in RUN_FILES for path in out.glob(pattern) if path.is_file())


def prepare_output_dir(args: argparse.Namespace, runtime: Runtime) -> Path:
    """Create the run folder and check it is writable; refuse to train over an earlier run.

    A folder that already holds a run needs ``--resume`` (continue it) or ``--overwrite`` (its
    checkpoints, exports, summary and TensorBoard events are deleted first, so no stale
    ``checkpoint_<e>`` is left next to the new ones). ``config.json`` is written by
    :func:`write_run_config` once a resumed checkpoint has loaded.
    """
    out = Path(args.output_dir)
    previous = previous_run_files(out) if out.is_dir() else []
    if previous and not (args.resume or args.overwrite):
        names = ", ".join(str(path.relative_to(out)) for path in previous[:3])
        raise STCLNError(f"--output_dir {out}: already holds a run ({names}{', ...' if len(previous) > 3 else ''}); "
                         "pass --resume to continue it, --overwrite to replace it, or choose another --output_dir")
    if runtime.is_main:
        if previous and args.overwrite and not args.resume:
            for path in previous:
                path.unlink(missing_ok=True)
            log.info("--overwrite: deleted %d files of the previous run in %s", len(previous), out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise STCLNError(f"{out}: output directory is not writable ({err.strerror})") from None
    return out


def write_run_config(args: argparse.Namespace, out: Path, runtime: Runtime) -> None:
    """Dump the resolved flags to ``config.json`` (rank 0), after any ``--resume`` has loaded."""
    if runtime.is_main:
        dump_args(args, out / "config.json")


def open_writer(out: Path, runtime: Runtime):
    """TensorBoard writer on rank 0 (None elsewhere)."""
    if not runtime.is_main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out / "tb"))


def resume_state(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: STCLNConfig, trusted: bool) -> tuple[int, dict]:
    """Load ``last.tar`` into model and optimizer; return (next epoch, saved extras)."""
    path = out / "last.tar"
    ckpt = load_checkpoint(path, trusted)
    if not isinstance(ckpt, dict) or not all(isinstance(ckpt.get(k), dict) for k in ("model", "optimizer", "model_config")) \
            or not isinstance(ckpt.get("epoch"), int):
        raise CheckpointError(f"{path}: not a resumable STCLN checkpoint (needs dicts 'model', 'optimizer', "
                              "'model_config' and an integer 'epoch')")
    if ckpt["model_config"] != config.to_dict():
        diff = sorted(k for k in set(ckpt["model_config"]) | set(config.to_dict())
                      if ckpt["model_config"].get(k) != config.to_dict().get(k))
        raise CheckpointError(f"{path}: saved with a different model configuration ({', '.join(diff)}); "
                              "resume with the same flags")
    load_state_checked(unwrap(model), ckpt["model"], str(path))  # e.g. a pre-training run resumed by fine-tuning
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: optimizer state does not fit this run ({err})") from None
    log.info("resumed from %s at epoch %d", path, ckpt["epoch"] + 1)
    return ckpt["epoch"] + 1, ckpt.get("extra", {})


def full_state(model: nn.Module, optimizer, config: STCLNConfig, args, epoch: int, metrics: dict, extra: dict | None = None) -> dict:
    return {
        "kind": "full", "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
        "metrics": metrics, "model_config": config.to_dict(), "args": args_dict(args), "extra": extra or {},
    }


def guarded_main(run: Callable[[], None], output_dir: Path | None) -> int:
    """Run a script body; return its exit status.

    Expected errors (:class:`STCLNError`) become one ``error: ...`` line and status 2
    (``STCLN_DEBUG=1`` re-raises them); any other exception is a bug and keeps its traceback. Ctrl-C / SIGTERM stop the run cleanly (utils/signals.py)
    with status 130 / 143 and a hint to ``--resume``.
    """
    with stop_on_signals():
        try:
            run()
        except STCLNError as err:  # expected errors only: anything else is a bug and keeps its traceback
            if os.environ.get("STCLN_DEBUG"):
                raise
            print(f"error: {err}", file=sys.stderr)
            return 2
        except Interrupted as stop:
            last = Path(output_dir) / "last.tar" if output_dir is not None else None
            hint = f"; {last} holds the last saved epoch: continue with --resume" if last and last.is_file() else ""
            print(f"stopped by {stop}{hint}", file=sys.stderr)
            return stop.exit_status
    return 0


__all__ = [
    "compile_backend", "epoch_seed", "full_state", "guarded_main", "loop_options", "make_loader", "make_optimizer",
    "open_writer", "prepare_output_dir", "resume_state", "setup_logging", "start_epoch", "wrap_model", "write_json",
    "write_run_config",
]
