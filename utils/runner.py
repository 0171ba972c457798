"""Wiring shared by the entry scripts: loaders, optimiser, resume, logging, checkpoints.

Resumability: every epoch re-seeds the global torch RNG (dropout), the mask generator, the
sampler and the dataset's random crops from ``seed`` and the epoch number, so a run resumed from
``last.tar`` at an epoch boundary continues exactly as the uninterrupted run would (on CPU).
"""

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from models import STCLNConfig
from utils.args import args_dict, dump_args
from utils.checkpoint import load_checkpoint, unwrap
from utils.datasets.collate import pad_collate
from utils.distributed import Runtime, seed_worker
from utils.errors import CheckpointError, STCLNError
from utils.report import write_text_atomic

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


def wrap_model(model: nn.Module, runtime: Runtime, compile_model: bool) -> nn.Module:
    model = model.to(runtime.device)
    if compile_model and runtime.device.type == "cuda":
        model = torch.compile(model)
    if runtime.distributed:
        model = DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None)
    return model


def make_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """Adam over the trainable parameters (frozen ones, e.g. --freeze_backbone, are left out)."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=args.weight_decay)


def prepare_output_dir(args: argparse.Namespace, runtime: Runtime) -> Path:
    """Create the run folder (checking it is writable) and dump config.json on rank 0."""
    out = Path(args.output_dir)
    if runtime.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise STCLNError(f"{out}: output directory is not writable ({err.strerror})") from None
        dump_args(args, out / "config.json")
    return out


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
    if ckpt.get("model_config") != config.to_dict():
        raise CheckpointError(f"{path}: saved with a different model configuration; resume with the same flags")
    unwrap(model).load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    log.info("resumed from %s at epoch %d", path, ckpt["epoch"] + 1)
    return ckpt["epoch"] + 1, ckpt.get("extra", {})


def full_state(model: nn.Module, optimizer, config: STCLNConfig, args, epoch: int, metrics: dict, extra: dict | None = None) -> dict:
    return {
        "kind": "full", "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
        "metrics": metrics, "model_config": config.to_dict(), "args": args_dict(args), "extra": extra or {},
    }


def write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2))


__all__ = [
    "epoch_seed", "full_state", "make_loader", "make_optimizer", "open_writer", "prepare_output_dir",
    "resume_state", "setup_logging", "start_epoch", "wrap_model", "write_json",
]
