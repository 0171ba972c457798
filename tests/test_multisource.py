"""Multi-source STCLN (issue 38, model side): optical primary + radar sources of their own lengths.

Tiny models and 8 x 8 crops on CPU. The batches follow the interface of utils/datasets/CONTRACT.md:
the primary keeps ``image``/``days``/``ndvi``/``positions``/``pad_mask``, each further source s adds
``image_<s>``, ``days_<s>``, ``positions_<s>`` and ``pad_mask_<s>``, padded on its own.
"""

from dataclasses import replace

import pytest
import torch
from torch.utils.data import DataLoader

from fakes import SIZE, TwoSourceSITS
from utils.datasets.collate import pad_collate

from models import STCLNPretrain, STCLNSegmenter, multisource_mse, tiny_config
from models.config import STCLNConfig
from models.heads import PRIMARY
from utils.checkpoint import backbone_export, load_finetuned, load_pretrained_backbone, resume_state, save_checkpoint
from utils.engine import LoopOptions, dihedral_augment, evaluate, extra_inputs, pretrain_one_epoch, train_one_epoch
from utils.errors import CheckpointError, STCLNError
from utils.masking import MaskingConfig, build_source_mask
from utils.precision import compile_model

RADAR = TwoSourceSITS.extra_sources
OPTIONS = LoopOptions(torch.device("cpu"), grad_clip=5.0, progress=False)


def multi_config(fusion="late", **overrides) -> STCLNConfig:
    base = dict(
        in_channels=5,
        num_classes=4,
        extra_sources=RADAR,
        extra_channels=(3, 2),
        fusion=fusion,
        use_pad_mask=True,
        positions="doy",
    )
    return tiny_config(**(base | overrides))


def one_batch(n=3, seed=0) -> dict:
    return pad_collate([TwoSourceSITS(n, seed)[i] for i in range(n)])


def test_config_fields_defaults_round_trip_and_old_files():
    assert STCLNConfig().extra_sources == () and STCLNConfig().fusion == "late"
    config = multi_config("merged")
    assert STCLNConfig.from_dict(config.to_dict()) == config
    assert isinstance(config.to_dict()["extra_sources"], list)  # plain types for weights_only loading
    old = {k: v for k, v in tiny_config().to_dict().items() if k not in ("extra_sources", "extra_channels", "fusion")}
    assert STCLNConfig.from_dict(old) == tiny_config()  # a checkpoint written before the fields loads unchanged
    with pytest.raises(ValueError, match="one band count per extra source"):
        tiny_config(extra_sources=("S1A",), extra_channels=(3, 3))
    with pytest.raises(ValueError, match="needs positions='doy'"):
        tiny_config(extra_sources=("S1A",), extra_channels=(3,), fusion="merged")
    with pytest.raises(ValueError, match="fusion must be one of"):
        tiny_config(fusion="early")


@pytest.mark.parametrize("fusion", ["late", "merged"])
def test_shapes_with_sources_of_different_lengths(fusion):
    torch.manual_seed(0)
    config = multi_config(fusion)
    batch = one_batch()
    assert batch["image"].shape[1] != batch["image_S1A"].shape[1]
    x, days, pad = batch["image"], batch["days"], batch["pad_mask"]
    extra = extra_inputs(batch, config)
    logits = STCLNSegmenter(config)(x, days, pad, None, extra)
    assert logits.shape == (3, 4, SIZE, SIZE) and torch.isfinite(logits).all()
    masks = {name: build_source_mask(extra[name][0], extra[name][2], MaskingConfig()) for name in RADAR}
    mask = build_source_mask(x, pad, MaskingConfig())
    out = STCLNPretrain(config)(x, days, mask, pad, extra=extra, extra_masks=masks)
    assert out["pred"].shape == x.shape
    assert {name: p.shape for name, p in out["preds"].items()} == {name: extra[name][0].shape for name in RADAR}
    with pytest.raises(ValueError, match="built for extra sources"):
        STCLNSegmenter(config)(x, days, pad, None, {"S1A": extra["S1A"]})


def test_single_source_keys_are_the_multi_source_model_minus_its_extra_sources():
    single = set(STCLNSegmenter(tiny_config(in_channels=5, num_classes=4)).state_dict())
    for fusion in ("late", "merged"):
        multi = set(STCLNSegmenter(multi_config(fusion)).state_dict())
        extra = {
            k for k in multi if k.startswith(("backbone.extra.", "backbone.source_embedding", "extra_sta.", "fusion."))
        }
        assert multi - extra == single and extra


def test_late_fusion_with_a_zero_radar_branch_is_the_optical_model():
    """The radar branch = every parameter of backbone.extra.<s>, extra_sta.<s> and fusion.<s>; at zero
    (in fact fusion.<s> at zero suffices) the fused model gives the optical model's logits exactly."""
    torch.manual_seed(0)
    config = multi_config("late")
    optical = STCLNSegmenter(replace(config, extra_sources=(), extra_channels=())).eval()
    fused = STCLNSegmenter(config).eval()
    missing, unexpected = fused.load_state_dict(optical.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("backbone.extra.", "extra_sta.", "fusion.")) for k in missing)
    batch = one_batch()
    extra = extra_inputs(batch, config)
    with torch.no_grad():
        with_radar = fused(batch["image"], batch["days"], batch["pad_mask"], None, extra)
        for name, param in fused.named_parameters():
            if name.startswith(("backbone.extra.", "extra_sta.", "fusion.")):
                param.zero_()
        expected = optical(batch["image"], batch["days"], batch["pad_mask"])
        assert torch.equal(fused(batch["image"], batch["days"], batch["pad_mask"], None, extra), expected)
    assert not torch.allclose(with_radar, expected, atol=1e-4)  # the radar branch did count before


def test_multisource_loss_by_hand():
    """Mean over sources of each one's mean squared error over masked cells (all bands); unmasked and
    padded cells of the prediction (garbage here) never count; a source without any masked cell is left out."""
    gen = torch.Generator().manual_seed(0)
    targets, preds = {}, {}
    shapes = {PRIMARY: (2, 3, 2, 2, 2), "S1A": (2, 4, 3, 2, 2), "S1D": (2, 2, 1, 2, 2)}
    for name, shape in shapes.items():
        target = torch.randn(shape, generator=gen)
        mask = torch.zeros(shape[0], shape[1], *shape[3:], dtype=torch.bool)
        preds[name] = torch.full(shape, 1e6)  # garbage everywhere ...
        targets[name] = (target, mask)
    cells = {PRIMARY: [(0, 0, 0, 1), (1, 2, 1, 1)], "S1A": [(0, 3, 1, 0), (1, 0, 0, 0), (1, 1, 1, 1)], "S1D": []}
    expected = []
    for name, chosen in cells.items():
        target, mask = targets[name]
        errors = []
        for b, t, i, j in chosen:
            mask[b, t, i, j] = True
            preds[name][b, t, :, i, j] = target[b, t, :, i, j] + torch.arange(1.0, target.shape[2] + 1)  # ... but here
            errors.append(sum(float(k) ** 2 for k in range(1, target.shape[2] + 1)) / target.shape[2])
        if errors:
            expected.append(sum(errors) / len(errors))
    loss, losses = multisource_mse(preds, targets)
    assert loss.item() == pytest.approx(sum(expected) / len(expected))  # (14/3 + 14/3) / 2, S1D left out
    assert losses["S1D"].item() == 0.0 and losses[PRIMARY].item() == pytest.approx(2.5)


def test_radar_masks_skip_padding_only_and_optical_keeps_its_gate():
    batch = one_batch(n=4)
    config = multi_config()
    extra = extra_inputs(batch, config)
    masking = MaskingConfig(ratio=0.5)
    gen = torch.Generator().manual_seed(0)
    for name in RADAR:
        image, _, pad = extra[name]
        mask = build_source_mask(image, pad, masking, gen)
        assert mask.shape == (4, image.shape[1], SIZE, SIZE)
        assert not mask[pad].any()  # padded frames: never
        assert 0.35 < mask[~pad].float().mean() < 0.65  # every real frame eligible, no NDVI gate
    # the optical primary with NDVI below the gate: nothing masked there, the radar still trains
    batch["ndvi"][:] = 0.0
    model = STCLNPretrain(config)
    loader = [batch]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    stats = pretrain_one_epoch(
        model,
        loader,
        optimizer,
        0,
        config=config,
        masking=masking,
        red_index=0,
        nir_index=1,
        generator=gen,
        options=OPTIONS,
    )
    assert stats["masked_fraction"] == 0.0 and stats["masked_fraction_S1A"] > 0.3 and stats["masked_fraction_S1D"] > 0.3


def loop_both(config: STCLNConfig, options: LoopOptions) -> tuple[dict, dict]:
    torch.manual_seed(0)
    data = TwoSourceSITS()
    loader = DataLoader(data, batch_size=3, collate_fn=pad_collate)
    pretrain = STCLNPretrain(config)
    optimizer = torch.optim.Adam(pretrain.parameters(), lr=1e-3)
    stats = pretrain_one_epoch(
        pretrain,
        loader,
        optimizer,
        0,
        config=config,
        masking=MaskingConfig(),
        red_index=0,
        nir_index=1,
        generator=torch.Generator().manual_seed(0),
        options=options,
    )
    model = STCLNSegmenter(config)
    model.backbone.load_state_dict(pretrain.backbone.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0])
    train = train_one_epoch(
        model, loader, optimizer, 0, config=config, class_weight=weight, options=options, augment=True
    )
    matrix = evaluate(model, loader, config=config, num_classes=4, ignore_index=3, options=options)
    labels = torch.stack([s["label"] for s in data.samples])
    assert matrix.matrix.sum().item() == (labels != 3).sum().item()
    return stats, train


@pytest.mark.parametrize("fusion,amp", [("late", False), ("merged", False), ("late", True)])
def test_engine_pretrains_finetunes_and_evaluates_two_sources(fusion, amp):
    config = multi_config(fusion)
    stats, train = loop_both(config, replace(OPTIONS, amp=amp))
    assert train["loss"] > 0 and stats["skipped_batches"] == 0 == train["skipped_batches"]
    for suffix in ("", "_S1A", "_S1D"):
        assert 0.3 < stats[f"masked_fraction{suffix}"] < 0.5
        assert stats[f"pretext_model{suffix}"] > 0 and stats[f"pretext_temporal_interp{suffix}"] > 0
    per_source = [stats[f"pretext_model{suffix}"] for suffix in ("", "_S1A", "_S1D")]
    tolerance = 0.05 if amp else 1e-6  # the epoch's loss is the batches' mean of per-source means (bf16 rounding)
    assert abs(stats["loss"] - sum(per_source) / 3) < tolerance * stats["loss"] + 0.3 * max(per_source)


def test_engine_refuses_a_batch_whose_sources_differ_from_the_models():
    batch = one_batch()
    del batch["image_S1D"]
    with pytest.raises(STCLNError, match="image_S1D"):
        extra_inputs(batch, multi_config())
    with pytest.raises(STCLNError, match=r"brings the sources \['S1A'\]"):  # never silently ignored
        extra_inputs(batch, tiny_config(in_channels=5, num_classes=4))


def test_augment_turns_every_source_alike():
    batch = one_batch()
    batch["image_S1A"][:, 0, 0] = batch["image"][:, 0, 0]  # same map in both sources
    torch.manual_seed(3)
    out = dihedral_augment(batch)
    assert torch.equal(out["image_S1A"][:, 0, 0], out["image"][:, 0, 0])
    assert not torch.equal(out["image"], batch["image"])


def test_single_source_backbone_loads_into_the_optical_encoder(tmp_path):
    torch.manual_seed(0)
    config = multi_config("late")
    single = STCLNPretrain(replace(config, extra_sources=(), extra_channels=()))
    path = tmp_path / "checkpoint_1.single.tar"
    save_checkpoint(path, backbone_export(single, single.config, 0))
    model = STCLNSegmenter(config)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    assert load_pretrained_backbone(model, path) == len(single.backbone.state_dict())
    after = model.backbone.state_dict()
    for key, value in after.items():
        if key.startswith("extra."):
            assert torch.equal(value, before[key]), key  # radar encoders keep their initialisation
        else:
            assert torch.equal(value, single.backbone.state_dict()[key]), key
    # a multi-source backbone loads whole, and only into the same sources and fusion
    multi = STCLNPretrain(config)
    path = tmp_path / "checkpoint_1.multi.tar"
    save_checkpoint(path, backbone_export(multi, config, 0))
    load_pretrained_backbone(model, path)
    assert all(torch.equal(v, multi.backbone.state_dict()[k]) for k, v in model.backbone.state_dict().items())
    with pytest.raises(CheckpointError, match="fusion"):
        load_pretrained_backbone(STCLNSegmenter(replace(config, fusion="merged")), path)
    with pytest.raises(CheckpointError, match="extra_sources"):
        load_pretrained_backbone(STCLNSegmenter(replace(config, extra_sources=(), extra_channels=())), path)


def test_authors_backbone_loads_into_the_optical_encoder_of_a_merged_model(tmp_path):
    from pathlib import Path

    from utils.checkpoint import config_for_backbone, read_pretrained_backbone

    fixture = Path(__file__).parent / "data" / "authors_parity_small" / "checkpoint_99.sttrans.tar"
    backbone = read_pretrained_backbone(fixture)
    flags = multi_config("late", in_channels=13, positions="index")
    config = config_for_backbone(flags, backbone)
    assert config.extra_sources == RADAR and config.widths == (8, 32)
    model = STCLNSegmenter(config)
    load_pretrained_backbone(model, backbone)
    assert torch.equal(
        model.backbone.state_dict()["spatial.block1.0.weight"], backbone.state["spatial.block1.0.weight"]
    )
    merged = multi_config("merged", in_channels=13)
    with pytest.raises(CheckpointError, match="positional encoding"):  # the authors fed date indices; merged needs days
        config_for_backbone(merged, backbone)
    model = STCLNSegmenter(config_for_backbone(merged, backbone, allow_encoding_change=True))
    load_pretrained_backbone(model, backbone)
    assert torch.equal(
        model.backbone.state_dict()["temporal.layers.0.qkv.weight"], backbone.state["temporal.layers.0.qkv.weight"]
    )


def test_checkpoints_keep_the_new_fields_and_old_ones_still_load(tmp_path):
    config = multi_config("merged")
    model = STCLNSegmenter(config)
    optimizer = torch.optim.Adam(model.parameters())
    state = {
        "kind": "full",
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 0,
        "model_config": config.to_dict(),
    }
    save_checkpoint(tmp_path / "best.tar", state)
    _, loaded = load_finetuned(tmp_path / "best.tar")
    assert loaded == config
    # written before the fields existed: loads, and resumes, as the single-source model
    old = tiny_config(in_channels=5, num_classes=4)
    single = STCLNSegmenter(old)
    optimizer = torch.optim.Adam(single.parameters())
    dict_without = {k: v for k, v in old.to_dict().items() if k not in ("extra_sources", "extra_channels", "fusion")}
    save_checkpoint(
        tmp_path / "last.tar",
        {
            "kind": "full",
            "model": single.state_dict(),
            "epoch": 0,
            "optimizer": optimizer.state_dict(),
            "model_config": dict_without,
        },
    )
    _, loaded = load_finetuned(tmp_path / "last.tar")
    assert loaded == old
    assert resume_state(tmp_path, single, optimizer, old, trusted=False)[0] == 1


@pytest.mark.parametrize("fusion", ["late", "merged"])
def test_padding_and_invalid_cells_never_change_the_fused_output(fusion):
    """use_pad_mask + use_valid_mask: radar frames appended as padding (garbage values) and the values of
    invalid optical cells leave the logits unchanged, in both fusions."""
    torch.manual_seed(0)
    config = multi_config(fusion, use_valid_mask=True)
    model = STCLNSegmenter(config).eval()
    batch = one_batch(n=1)
    valid = torch.rand(batch["image"].shape[:2] + (SIZE, SIZE), generator=torch.Generator().manual_seed(1)) > 0.3
    extra = extra_inputs(batch, config)
    with torch.no_grad():
        reference = model(batch["image"], batch["days"], batch["pad_mask"], valid, extra)
        image = batch["image"].masked_fill(~valid[:, :, None], 1e3)  # invalid cells: other values
        padded = {}
        for name, (x_s, days_s, pad_s) in extra.items():
            padded[name] = (
                torch.cat([x_s, torch.full_like(x_s[:, :2], 7.0)], dim=1),  # (B, T_s + 2, C_s, H, W)
                torch.cat([days_s, days_s[:, :2]], dim=1),
                torch.cat([pad_s, torch.ones_like(pad_s[:, :2])], dim=1),
            )
        changed = model(image, batch["days"], batch["pad_mask"], valid, padded)
    assert torch.allclose(changed, reference, atol=1e-5)


def test_with_sources_builds_the_config_from_a_data_sets_sources():
    from models.config import with_sources

    channels = {"S2": 10, "S1A": 3, "S1D": 3}
    config = with_sources(tiny_config(positions="doy"), ("S2", "S1A", "S1D"), channels, "merged")
    assert (config.in_channels, config.extra_sources, config.extra_channels, config.fusion) == (
        10,
        ("S1A", "S1D"),
        (3, 3),
        "merged",
    )
    assert with_sources(tiny_config(), ("S2",), channels) == tiny_config(in_channels=10)
    radar = with_sources(tiny_config(), ("S1A", "S1D"), channels)  # a radar primary
    assert radar.in_channels == 3 and radar.extra_sources == ("S1D",)
    with pytest.raises(ValueError, match="band count"):
        with_sources(tiny_config(), ("S2", "S1"), channels)


@pytest.mark.parametrize("fusion", ["late", "merged"])
def test_grad_checkpointing_reaches_every_source(fusion):
    """Same loss and gradients with --grad_checkpoint, and the radar encoders are checkpointed too."""
    config = multi_config(fusion, dropout=0.0)
    batch = one_batch()
    extra = extra_inputs(batch, config)
    gen = torch.Generator().manual_seed(0)
    mask = build_source_mask(batch["image"], batch["pad_mask"], MaskingConfig(), gen)
    masks = {name: build_source_mask(extra[name][0], extra[name][2], MaskingConfig(), gen) for name in RADAR}
    results = []
    for enable in (False, True):
        torch.manual_seed(0)
        model = STCLNPretrain(config)
        model.backbone.set_grad_checkpointing(enable)
        assert all(encoder.grad_checkpoint == enable for encoder in model.backbone.late_encoders())
        loss = model(batch["image"], batch["days"], mask, batch["pad_mask"], extra=extra, extra_masks=masks)["loss"]
        loss.backward()
        results.append((loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}))
    (loss0, grads0), (loss1, grads1) = results
    assert torch.equal(loss0, loss1) and grads0.keys() == grads1.keys()
    assert any(k.startswith("backbone.extra.S1A.") for k in grads0)
    for key in grads0:
        assert torch.allclose(grads0[key], grads1[key], atol=1e-6), key


@pytest.mark.parametrize("fusion", ["late", "merged"])
def test_each_source_is_reconstructed_from_both(fusion):
    """The optical reconstruction changes with the radar input and the radar's with the optical input;
    the loss is the mean of the per-source masked-cell MSEs."""
    torch.manual_seed(0)
    config = multi_config(fusion)
    model = STCLNPretrain(config).eval()
    batch = one_batch()
    extra = extra_inputs(batch, config)
    gen = torch.Generator().manual_seed(0)
    mask = build_source_mask(batch["image"], batch["pad_mask"], MaskingConfig(), gen)
    masks = {name: build_source_mask(extra[name][0], extra[name][2], MaskingConfig(), gen) for name in RADAR}

    def run(image, radar):
        with torch.no_grad():
            return model(image, batch["days"], mask, batch["pad_mask"], extra=radar, extra_masks=masks)

    out = run(batch["image"], extra)
    assert out["loss"].item() == pytest.approx(sum(v.item() for v in out["losses"].values()) / 3)
    other_radar = {name: (x_s + 1.0, days_s, pad_s) for name, (x_s, days_s, pad_s) in extra.items()}
    assert not torch.allclose(run(batch["image"], other_radar)["pred"], out["pred"], atol=1e-4)
    assert not torch.allclose(run(batch["image"] + 1.0, extra)["preds"]["S1A"], out["preds"]["S1A"], atol=1e-4)


@pytest.mark.filterwarnings("ignore:Error detected in IndexPutBackward0")  # said by torch while compiling the backward
def test_a_compiled_two_source_model_trains_as_the_eager_one():
    """The scripts' --compile (torch.compile, aot_eager) on a late-fusion model, one training step of the engine's
    loop on a batch of three sources of different lengths: the loss and the updated weights are the eager
    model's (the same aten ops; only the summation order may differ). Under torchrun, --compile runs in
    tests/test_real_scene.py with one source; the two-source scripts' torchrun test is eager (tests/test_ddp.py)."""
    config = multi_config("late", dropout=0.0)  # dropout draws differ between eager and compiled graphs
    batch = one_batch()
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0])
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = STCLNSegmenter(config)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        wrapped = compile_model(model, "aot_eager") if compiled else model
        train = train_one_epoch(wrapped, [batch], optimizer, 0, config=config, class_weight=weight, options=OPTIONS)
        results.append((train["loss"], {k: v.detach().clone() for k, v in model.state_dict().items()}))
    (eager_loss, eager_state), (compiled_loss, compiled_state) = results
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    assert compiled_state.keys() == eager_state.keys()
    for key, value in eager_state.items():
        torch.testing.assert_close(compiled_state[key], value, rtol=1e-4, atol=1e-6, msg=key)
