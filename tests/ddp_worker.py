"""torchrun worker for tests/test_ddp.py: one pre-training and one fine-tuning epoch under DDP (gloo),
then every rank saves its weights so the test can check they are identical."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes import FakeSITS  # noqa: E402
from models import STCLNPretrain, STCLNSegmenter, tiny_config  # noqa: E402
from utils.checkpoint import unwrap  # noqa: E402
from utils.distributed import seed_everything, setup_runtime, shutdown  # noqa: E402
from utils.engine import LoopOptions, evaluate, pretrain_one_epoch, train_one_epoch  # noqa: E402
from utils.masking import MaskingConfig  # noqa: E402
from utils.runner import make_loader, start_epoch, wrap_model  # noqa: E402


def main(out: Path) -> None:
    runtime = setup_runtime("cpu")
    seed_everything(0)
    data = FakeSITS(n=8)
    config = tiny_config(in_channels=FakeSITS.in_channels, num_classes=FakeSITS.num_classes)
    options = LoopOptions(runtime.device, grad_clip=5.0, progress=False, distributed=runtime.distributed)
    loader = make_loader(data, 2, runtime, train=True, seed=0, workers=0)
    pretrain = wrap_model(STCLNPretrain(config), runtime, False)
    optimizer = torch.optim.Adam(pretrain.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(100 + runtime.rank)  # different masks per rank
    start_epoch(loader, 0, 0)
    stats = pretrain_one_epoch(pretrain, loader, optimizer, 0, config=config, masking=MaskingConfig(),
                               red_index=0, nir_index=1, generator=generator, options=options)
    segmenter = wrap_model(STCLNSegmenter(config), runtime, False)
    optimizer = torch.optim.Adam(segmenter.parameters(), lr=1e-3)
    train_one_epoch(segmenter, loader, optimizer, 0, config=config, class_weight=torch.ones(4), options=options)
    eval_loader = make_loader(data, 2, runtime, train=False, seed=0, workers=0)
    matrix = evaluate(segmenter, eval_loader, config=config, num_classes=4, ignore_index=None, options=options)
    # parameters must match exactly; BatchNorm buffers are re-broadcast from rank 0 at every forward
    def params(model):
        return {k: v.detach() for k, v in unwrap(model).named_parameters()}

    torch.save({"pretrain": params(pretrain), "segmenter": params(segmenter),
                "loss": stats["loss"], "cm": matrix.matrix.cpu(),
                "pretext": torch.tensor([stats[k] for k in sorted(stats) if k.startswith("pretext_")])}, out / f"rank{runtime.rank}.pt")
    shutdown(runtime)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
