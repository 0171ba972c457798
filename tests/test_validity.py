"""Per-cell validity (cloud masks): never a reconstruction target, and with --drop_invalid never an input.

Each invariance is checked by changing the values of the invalid cells (to large garbage) and
comparing against the unchanged batch: what must not depend on them, does not.
"""

import pytest
import torch

from models import STCLNPretrain, STCLNSegmenter, tiny_config
from utils.datasets.collate import pad_collate
from utils.engine import LoopOptions, evaluate, pretrain_one_epoch, train_one_epoch
from utils.masking import MASK_MODES, MaskingConfig, build_mask, eligible_frames
from utils.pretext_baselines import baseline_sse

B, T, C, H, W = 3, 7, 2, 6, 6
OPTIONS = LoopOptions(torch.device("cpu"), progress=False)


def batch(seed: int = 0, all_invalid_pixel: bool = True) -> dict:
    """A padded batch with clouds: about 40 % of the cells invalid, sample 1 two dates shorter, and
    (optionally) one pixel of sample 0 invalid on every date."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for index in range(B):
        length = T - 2 if index == 1 else T
        valid = torch.rand(length, H, W, generator=generator) > 0.4
        if index == 0 and all_invalid_pixel:
            valid[:, 2, 3] = False
        samples.append(
            {
                "image": torch.randn(length, C, H, W, generator=generator),
                "ndvi": 0.5 + 0.1 * torch.rand(length, H, W, generator=generator),
                "days": torch.arange(length) * 10,
                "label": torch.randint(0, 3, (H, W), generator=generator),
                "valid": valid,
                "id": str(index),
            }
        )
    return pad_collate(samples)


def spoiled(data: dict, value: float = 1e3) -> dict:
    """The same batch with every invalid (not padded) cell's bands replaced by garbage."""
    garbage = torch.full_like(data["image"], value) * torch.randn_like(data["image"]).sign()
    invalid = ~data["valid"] & ~data["pad_mask"][:, :, None, None]  # (B, T, H, W)
    return data | {"image": torch.where(invalid[:, :, None], garbage, data["image"])}


def test_collate_pads_validity_with_false_and_refuses_a_mixed_batch():
    data = batch()
    assert data["valid"].shape == (B, T, H, W) and data["valid"].dtype == torch.bool
    assert not data["valid"][1, T - 2 :].any()  # the padded dates of the short sample
    samples = [
        {
            "image": torch.zeros(2, C, H, W),
            "ndvi": torch.zeros(2, H, W),
            "days": torch.arange(2),
            "label": torch.zeros(H, W, dtype=torch.int64),
            "id": str(i),
        }
        for i in range(2)
    ]
    samples[0]["valid"] = torch.ones(2, H, W, dtype=torch.bool)
    with pytest.raises(ValueError, match="some carry 'valid'"):
        pad_collate(samples)


@pytest.mark.parametrize("mode", MASK_MODES)
def test_the_mask_never_targets_an_invalid_cell_and_keeps_the_ratio_on_valid_ones(mode):
    data = batch()
    config = MaskingConfig(mode=mode, block=2)
    masks = torch.stack(
        [
            build_mask(
                data["image"],
                data["ndvi"],
                data["pad_mask"],
                config,
                0,
                1,
                torch.Generator().manual_seed(seed),
                data["valid"],
            )
            for seed in range(200)
        ]
    )
    assert not (masks & ~data["valid"]).any()  # (200, B, T, H, W): no draw hits an invalid cell
    assert abs(masks.float().sum() / (200 * data["valid"].sum()) - 0.4) < 0.02  # P(masked | valid) = ratio


def test_the_gate_counts_valid_pixels_only():
    ndvi = torch.full((1, 2, 4, 4), 0.8)
    ndvi[0, :, :2] = -0.1  # half of each frame bare ... (B, T, H, W)
    valid = torch.ones(1, 2, 4, 4, dtype=torch.bool)
    valid[0, 0, :2] = False  # ... but on date 0 the bare half is cloudy
    assert eligible_frames(ndvi, None, MaskingConfig()).tolist() == [[False, False]]
    assert eligible_frames(ndvi, None, MaskingConfig(), valid).tolist() == [[True, False]]
    assert eligible_frames(ndvi, None, MaskingConfig(), torch.zeros_like(valid)).tolist() == [
        [False, False]
    ]  # all cloudy
    assert eligible_frames(ndvi, None, MaskingConfig(ndvi_gate=False), torch.zeros_like(valid)).tolist() == [
        [False, False]
    ]


def pretrain_loss(data: dict, hide: bool) -> tuple[torch.Tensor, dict]:
    torch.manual_seed(0)
    model = STCLNPretrain(tiny_config(in_channels=C, use_pad_mask=True)).eval()  # eval: no dropout stream to match
    mask = build_mask(
        data["image"],
        data["ndvi"],
        data["pad_mask"],
        MaskingConfig(),
        0,
        1,
        torch.Generator().manual_seed(3),
        data["valid"],
    )
    hidden = ~data["valid"] if hide else None
    out = model(data["image"], data["positions"], mask, data["pad_mask"], hidden, data["valid"])
    return out["loss"], baseline_sse(data["image"], mask, data["days"], data["pad_mask"], hidden)


def test_with_hide_invalid_the_pretraining_loss_and_baselines_ignore_invalid_cells():
    data = batch()
    loss, baselines = pretrain_loss(data, hide=True)
    loss_spoiled, baselines_spoiled = pretrain_loss(spoiled(data), hide=True)
    torch.testing.assert_close(loss_spoiled, loss, rtol=1e-5, atol=1e-6)
    for key in baselines:
        torch.testing.assert_close(baselines_spoiled[key], baselines[key], rtol=1e-5, atol=1e-6)
    # without the option the invalid cells are visible input (the paper sees every observation) ...
    assert not torch.isclose(pretrain_loss(spoiled(data), hide=False)[0], pretrain_loss(data, hide=False)[0])


def test_an_epoch_of_pretraining_never_reconstructs_an_invalid_cell():
    """... but never a target: the loss is the MSE over masked valid cells, recomputed independently."""
    data = batch()
    torch.manual_seed(0)
    config = tiny_config(in_channels=C, use_pad_mask=True, dropout=0.0)
    model = STCLNPretrain(config)
    seen = []
    original = model.forward

    def recording_forward(x, positions, mask, pad_mask=None, hidden=None, valid=None):
        out = original(x, positions, mask, pad_mask, hidden, valid)
        seen.append((mask, out["pred"].detach()))
        return out

    model.forward = recording_forward
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the weights stay, so the loss can be recomputed
    stats = pretrain_one_epoch(
        model,
        [data],
        optimizer,
        0,
        config=config,
        masking=MaskingConfig(),
        red_index=0,
        nir_index=1,
        generator=torch.Generator().manual_seed(0),
        options=OPTIONS,
    )
    ((mask, pred),) = seen
    assert mask.any() and not (mask & ~data["valid"]).any()
    expected = (
        (pred - data["image"]).square().permute(0, 1, 3, 4, 2)[mask].mean()
    )  # (B,T,C,H,W) -> (B,T,H,W,C) -> (N, C)
    assert stats["loss"] == pytest.approx(float(expected), rel=1e-5)


def segmenter(drop: bool) -> STCLNSegmenter:
    torch.manual_seed(0)
    model = STCLNSegmenter(tiny_config(in_channels=C, num_classes=3, use_pad_mask=True, use_valid_mask=drop))
    model.sta.gate.data.fill_(0.7)  # the STA attention active (it starts at zero)
    return model.eval()


def test_with_drop_invalid_no_output_depends_on_an_invalid_cell():
    data = batch()
    model = segmenter(drop=True)
    logits = model(data["image"], data["positions"], data["pad_mask"], data["valid"])
    torch.testing.assert_close(
        model(spoiled(data)["image"], data["positions"], data["pad_mask"], data["valid"]), logits, rtol=1e-5, atol=1e-5
    )
    assert torch.isfinite(logits).all()  # the pixel invalid on every date too
    # the default (paper) model reads every observation
    paper = segmenter(drop=False)
    assert not torch.allclose(
        paper(spoiled(data)["image"], data["positions"], data["pad_mask"], data["valid"]),
        paper(data["image"], data["positions"], data["pad_mask"], data["valid"]),
    )


def test_with_drop_invalid_every_valid_cell_still_matters():
    data = batch(all_invalid_pixel=False)
    model = segmenter(drop=True)
    logits = model(data["image"], data["positions"], data["pad_mask"], data["valid"])
    t, row, col = (int(i) for i in data["valid"][0].nonzero()[0])
    changed = data["image"].clone()
    changed[0, t, :, row, col] += 5.0
    assert not torch.allclose(
        model(changed, data["positions"], data["pad_mask"], data["valid"])[0, :, row, col], logits[0, :, row, col]
    )


def test_with_drop_invalid_fine_tuning_and_evaluation_are_unchanged_by_invalid_cells():
    """A training step and an evaluation through the engine, on the clean and the spoiled batch."""
    results = []
    for data in (batch(), spoiled(batch())):
        model = segmenter(drop=True).train()
        config = model.config
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        torch.manual_seed(1)  # the same dropout stream
        train = train_one_epoch(model, [data], optimizer, 0, config=config, class_weight=torch.ones(3), options=OPTIONS)
        matrix = evaluate(model, [data], config=config, num_classes=3, ignore_index=None, options=OPTIONS)
        results.append((train["loss"], [p.detach().clone() for p in model.parameters()], matrix.matrix.clone()))
    (loss, params, matrix), (loss2, params2, matrix2) = results
    assert loss2 == pytest.approx(loss, rel=1e-5)
    for a, b in zip(params, params2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert torch.equal(matrix, matrix2)


def test_dihedral_augment_turns_every_key_of_a_sample_alike_and_covers_the_group():
    from utils.engine import dihedral_augment

    data = batch()
    data["label"] = torch.arange(B * H * W).view(B, H, W)  # every pixel distinct: the transform is readable
    seen = set()
    for seed in range(40):
        out = dihedral_augment(data, torch.Generator().manual_seed(seed))
        for b in range(B):
            # find the group element from the label, then check it moved image, ndvi and valid the same way
            matches = [
                (k, f)
                for k in range(4)
                for f in (False, True)
                if torch.equal(out["label"][b], _turn(data["label"][b], k, f))
            ]
            assert len(matches) == 1
            k, f = matches[0]
            seen.add((k, f))
            for key in ("image", "ndvi", "valid"):
                assert torch.equal(out[key][b], _turn(data[key][b], k, f)), key
    assert len(seen) == 8
    assert torch.equal(out["days"], data["days"]) and torch.equal(out["pad_mask"], data["pad_mask"])


def _turn(value: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    value = torch.rot90(value, k, dims=(-2, -1))
    return value.flip(-1) if flip else value
