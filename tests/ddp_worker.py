"""torchrun worker for tests/test_ddp.py: one pre-training and one fine-tuning epoch under DDP (gloo),
then every rank saves its weights so the test can check they are identical. Then --skip_nonfinite
epochs where only one rank meets a NaN input (or a non-finite loss): every rank must skip together.
Then the same pre-training, fine-tuning and test with two sources (optical + S1A + S1D, late fusion)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes import FakeSITS, TwoSourceSITS  # noqa: E402
from models import STCLNPretrain, STCLNSegmenter, tiny_config  # noqa: E402
from utils.checkpoint import unwrap  # noqa: E402
from utils.distributed import seed_everything, setup_runtime, shutdown  # noqa: E402
from utils.engine import LoopOptions, evaluate, pretrain_one_epoch, train_one_epoch  # noqa: E402
from utils.masking import MaskingConfig  # noqa: E402
from utils.datasets.collate import pad_collate  # noqa: E402
from utils.runner import make_loader, start_epoch, wrap_model  # noqa: E402


def main(out: Path) -> None:
    runtime = setup_runtime("cpu")
    seed_everything(0)
    data = FakeSITS(n=8)
    config = tiny_config(in_channels=FakeSITS.in_channels, num_classes=FakeSITS.num_classes)
    options = LoopOptions(runtime.device, grad_clip=5.0, progress=False, distributed=runtime.distributed)
    loader = make_loader(data, 2, runtime, train=True, seed=0, workers=0)
    pretrain = wrap_model(STCLNPretrain(config), runtime)
    optimizer = torch.optim.Adam(pretrain.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(100 + runtime.rank)  # different masks per rank
    start_epoch(loader, 0, 0)
    stats = pretrain_one_epoch(pretrain, loader, optimizer, 0, config=config, masking=MaskingConfig(),
                               red_index=0, nir_index=1, generator=generator, options=options)
    segmenter = wrap_model(STCLNSegmenter(config), runtime)
    optimizer = torch.optim.Adam(segmenter.parameters(), lr=1e-3)
    train_one_epoch(segmenter, loader, optimizer, 0, config=config, class_weight=torch.ones(4), options=options)
    eval_loader = make_loader(data, 2, runtime, train=False, seed=0, workers=0)
    matrix = evaluate(segmenter, eval_loader, config=config, num_classes=4, ignore_index=None, options=options)
    # parameters must match exactly; BatchNorm buffers are re-broadcast from rank 0 at every forward
    def params(model):
        return {k: v.detach() for k, v in unwrap(model).named_parameters()}

    result = {"pretrain": params(pretrain), "segmenter": params(segmenter), "loss": stats["loss"], "cm": matrix.matrix.cpu(),
              "pretext": torch.tensor([stats[k] for k in sorted(stats) if k.startswith("pretext_")])}
    result.update(skip_nonfinite_epochs(runtime, config))
    result.update(two_source_epochs(runtime))
    torch.save(result, out / f"rank{runtime.rank}.pt")
    shutdown(runtime)


def skip_nonfinite_epochs(runtime, config) -> dict:
    """Three batches per rank. Pre-training: rank 1 has a NaN pixel in batch 0, rank 0 an input
    x1e20 in batch 1 (finite input, NaN loss). Fine-tuning: rank 1 has a NaN pixel in batch 0."""
    samples = FakeSITS(n=6, seed=1 + runtime.rank).samples
    batches = [pad_collate(samples[i:i + 2]) for i in (0, 2, 4)]
    if runtime.rank == 1:
        batches[0]["image"][1, 0, 0, 0, 0] = float("nan")
    pretrain_batches = [dict(b) for b in batches]
    if runtime.rank == 0:
        pretrain_batches[1]["image"] = pretrain_batches[1]["image"] * 1e20
    options = LoopOptions(runtime.device, grad_clip=5.0, skip_nonfinite=True, progress=False, distributed=runtime.distributed)
    pretrain = wrap_model(STCLNPretrain(config), runtime)
    optimizer = torch.optim.Adam(pretrain.parameters(), lr=1e-3)
    pre = pretrain_one_epoch(pretrain, pretrain_batches, optimizer, 0, config=config, masking=MaskingConfig(), red_index=0,
                             nir_index=1, generator=torch.Generator().manual_seed(runtime.rank), options=options)
    segmenter = wrap_model(STCLNSegmenter(config), runtime)
    optimizer = torch.optim.Adam(segmenter.parameters(), lr=1e-3)
    fine = train_one_epoch(segmenter, batches, optimizer, 0, config=config, class_weight=torch.ones(4), options=options)
    return {"skip_pretrain": pre["skipped_batches"], "skip_finetune": fine["skipped_batches"],
            "skip_pretrain_params": {k: v.detach() for k, v in unwrap(pretrain).named_parameters()}}


def two_source_epochs(runtime) -> dict:
    """Pre-training, fine-tuning and test of a late-fusion model on 8 two-source samples, 2 per rank and batch."""
    from torch.utils.data import DataLoader, DistributedSampler, Subset

    seed_everything(0)
    data = TwoSourceSITS(n=8)
    config = tiny_config(in_channels=5, num_classes=4, extra_sources=data.extra_sources, extra_channels=(3, 2),
                         use_pad_mask=True, positions="doy")
    options = LoopOptions(runtime.device, grad_clip=5.0, progress=False, distributed=runtime.distributed)
    sampler = DistributedSampler(data, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=2, sampler=sampler, collate_fn=pad_collate)
    pretrain = wrap_model(STCLNPretrain(config), runtime)
    optimizer = torch.optim.Adam(pretrain.parameters(), lr=1e-3)
    stats = pretrain_one_epoch(pretrain, loader, optimizer, 0, config=config, masking=MaskingConfig(), red_index=0,
                               nir_index=1, generator=torch.Generator().manual_seed(runtime.rank), options=options)
    segmenter = wrap_model(STCLNSegmenter(config), runtime)
    optimizer = torch.optim.Adam(segmenter.parameters(), lr=1e-3)
    train_one_epoch(segmenter, loader, optimizer, 0, config=config, class_weight=torch.ones(4), options=options)
    share = Subset(data, range(runtime.rank, len(data), runtime.world_size))
    matrix = evaluate(segmenter, DataLoader(share, batch_size=2, collate_fn=pad_collate), config=config,
                      num_classes=4, ignore_index=None, options=options)
    return {"two_source": {"pretrain": {k: v.detach() for k, v in unwrap(pretrain).named_parameters()},
                           "segmenter": {k: v.detach() for k, v in unwrap(segmenter).named_parameters()},
                           "cm": matrix.matrix.cpu(), "masked_S1A": stats["masked_fraction_S1A"]}}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
