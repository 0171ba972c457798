"""Engine tests on in-memory data: losses fall, bad values are caught, empty batches skipped."""

import pytest
import torch

from fakes import FakeSITS
from models import STCLNPretrain, STCLNSegmenter, tiny_config
from models.heads import masked_mse
from utils.distributed import Runtime
from utils.engine import LoopOptions, evaluate, pretrain_one_epoch, train_one_epoch
from utils.errors import STCLNError
from utils.masking import MaskingConfig, build_mask
from utils.pretext_baselines import neighbour_mean, temporal_interpolation
from utils.runner import make_loader, start_epoch

RUNTIME = Runtime()
OPTIONS = LoopOptions(torch.device("cpu"), grad_clip=5.0, progress=False)


def setup(n=8, seed=0):
    torch.manual_seed(seed)
    data = FakeSITS(n=n, seed=seed)
    config = tiny_config(in_channels=data.in_channels, num_classes=data.num_classes, use_pad_mask=True)
    return data, config, make_loader(data, 4, RUNTIME, train=True, seed=seed, workers=0)


def pretrain_epochs(epochs: int) -> list[float]:
    data, config, loader = setup()
    model = STCLNPretrain(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for epoch in range(epochs):
        start_epoch(loader, 0, epoch)
        generator = torch.Generator().manual_seed(epoch)
        stats = pretrain_one_epoch(model, loader, optimizer, epoch, config=config, masking=MaskingConfig(),
                                   red_index=0, nir_index=1, generator=generator, options=OPTIONS)
        assert 0.3 < stats["masked_fraction"] < 0.5  # every frame is vegetated in FakeSITS
        losses.append(stats["loss"])
    return losses


def test_pretraining_lowers_the_loss():
    losses = pretrain_epochs(6)
    assert losses[-1] < 0.7 * losses[0], losses


def test_finetuning_lowers_the_loss_and_evaluates():
    data, config, loader = setup()
    model = STCLNSegmenter(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0])
    losses = []
    for epoch in range(8):
        start_epoch(loader, 0, epoch)
        losses.append(train_one_epoch(model, loader, optimizer, epoch, config=config, class_weight=weight, options=OPTIONS)["loss"])
    assert losses[-1] < 0.8 * losses[0], losses
    matrix = evaluate(model, make_loader(data, 3, RUNTIME, train=False, seed=0, workers=0), config=config,
                      num_classes=4, ignore_index=3, options=OPTIONS)
    labels = torch.stack([s["label"] for s in data.samples])
    assert matrix.matrix.sum().item() == (labels != 3).sum().item()


def test_nonfinite_input_names_the_sample_or_is_skipped():
    data, config, _ = setup(n=4)
    data.samples[2]["image"][0, 0, 0, 0] = float("nan")
    loader = make_loader(data, 4, RUNTIME, train=False, seed=0, workers=0)
    model = STCLNSegmenter(config)
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.raises(STCLNError, match=r"fake2") as info:
        train_one_epoch(model, loader, optimizer, 0, config=config, class_weight=torch.ones(4), options=OPTIONS)
    assert "\n" not in str(info.value)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    skipping = LoopOptions(torch.device("cpu"), skip_nonfinite=True, progress=False)
    with pytest.raises(STCLNError, match="no optimisation step; all 1 batches were skipped"):  # the only batch
        train_one_epoch(model, loader, optimizer, 0, config=config, class_weight=torch.ones(4), options=skipping)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    pairs = make_loader(data, 2, RUNTIME, train=False, seed=0, workers=0)  # [0, 1] trains, [2, 3] is skipped
    stats = train_one_epoch(model, pairs, optimizer, 0, config=config, class_weight=torch.ones(4), options=skipping)
    assert stats["skipped_batches"] == 1 and torch.isfinite(torch.tensor(stats["loss"])) and stats["loss"] > 0


def test_batch_without_labelled_pixels_is_skipped_not_nan():
    data, config, _ = setup(n=4)
    for sample in data.samples[2:]:
        sample["label"].fill_(3)  # only the ignored class
    loader = make_loader(data, 2, RUNTIME, train=False, seed=0, workers=0)
    model = STCLNSegmenter(config)
    optimizer = torch.optim.Adam(model.parameters())
    stats = train_one_epoch(model, loader, optimizer, 0, config=config,
                            class_weight=torch.tensor([1.0, 1.0, 1.0, 0.0]), options=OPTIONS)
    assert stats["skipped_batches"] == 1 and torch.isfinite(torch.tensor(stats["loss"])) and stats["loss"] > 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    unlabelled = make_loader(torch.utils.data.Subset(data, [2, 3]), 2, RUNTIME, train=False, seed=0, workers=0)
    with pytest.raises(STCLNError, match="no optimisation step"):  # never a silent untrained model
        train_one_epoch(model, unlabelled, optimizer, 1, config=config,
                        class_weight=torch.tensor([1.0, 1.0, 1.0, 0.0]), options=OPTIONS)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_same_seed_same_result():
    assert pretrain_epochs(2) == pretrain_epochs(2)


def test_pretext_diagnostics_are_masked_cell_weighted_mses_of_the_same_cells():
    data, config, loader = setup(n=7)  # batches of 4 and 3: unequal weights
    config.dropout = 0.0
    model = STCLNPretrain(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the model stays what it was
    start_epoch(loader, 0, 0)
    stats = pretrain_one_epoch(model, loader, optimizer, 0, config=config, masking=MaskingConfig(), red_index=0,
                               nir_index=1, generator=torch.Generator().manual_seed(3), options=OPTIONS)
    start_epoch(loader, 0, 0)
    generator = torch.Generator().manual_seed(3)
    totals = {"model": 0.0, "neighbour_mean": 0.0, "temporal_interp": 0.0}
    n_masked = 0
    for batch in loader:  # the same batches and masks, recomputed by hand
        x, pad = batch["image"], batch["pad_mask"]
        mask = build_mask(x, batch["ndvi"], pad, MaskingConfig(), 0, 1, generator)
        with torch.no_grad():
            preds = {"model": model(x, batch["positions"], mask, pad)["pred"], "neighbour_mean": neighbour_mean(x, mask, pad),
                     "temporal_interp": temporal_interpolation(x, mask, batch["days"], pad)}
        for key, pred in preds.items():
            totals[key] += masked_mse(pred, x, mask).item() * mask.sum().item()
        n_masked += mask.sum().item()
    for key, total in totals.items():
        assert abs(stats[f"pretext_{key}"] - total / n_masked) < 1e-5 * total / n_masked, key
    assert stats["pretext_neighbour_mean"] != stats["pretext_temporal_interp"]
