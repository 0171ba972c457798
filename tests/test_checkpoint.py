"""Checkpoint tests: atomic bit-exact round trip, the authors' layout, loud failures."""

import argparse
import shutil
from pathlib import Path

import pytest
import torch

from models import STCLNPretrain, STCLNSegmenter, paper_config, tiny_config
from utils.checkpoint import (
    backbone_export,
    load_checkpoint,
    load_pretrained_backbone,
    map_authors_head,
    save_checkpoint,
)
from utils import check_parity
from utils.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]
SMALL_PARITY_FIXTURE = REPO / "tests" / "data" / "authors_parity_small"  # 13 bands, widths 8/32, FFN 128


def double_conv_entries(prefix: str, c_in: int, c_out: int, c_mid: int | None = None) -> dict:
    """Keys and shapes of one authors' DoubleConv, written from docs/method.md §1.6."""
    c_mid = c_mid or c_out
    out = {}
    for conv, bn, cin, cout in ((0, 1, c_in, c_mid), (3, 4, c_mid, c_out)):
        out[f"{prefix}.{conv}.weight"] = (cout, cin, 3, 3)
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.{bn}.{name}"] = (cout,)
        out[f"{prefix}.{bn}.num_batches_tracked"] = ()
    return out


def transformer_layer_entries(prefix: str, d: int = 256, ffn: int = 1024) -> dict:
    return {
        f"{prefix}.self_attn.in_proj_weight": (3 * d, d),
        f"{prefix}.self_attn.in_proj_bias": (3 * d,),
        f"{prefix}.self_attn.out_proj.weight": (d, d),
        f"{prefix}.self_attn.out_proj.bias": (d,),
        f"{prefix}.linear1.weight": (ffn, d),
        f"{prefix}.linear1.bias": (ffn,),
        f"{prefix}.linear2.weight": (d, ffn),
        f"{prefix}.linear2.bias": (d,),
        f"{prefix}.norm1.weight": (d,),
        f"{prefix}.norm1.bias": (d,),
        f"{prefix}.norm2.weight": (d,),
        f"{prefix}.norm2.bias": (d,),
    }


def authors_backbone_state(in_channels: int, seed: int = 0) -> dict:
    """A random state dict with every key and shape of the authors' released backbone files."""
    shapes = {}
    shapes |= double_conv_entries("inc.double_conv", in_channels, 32)
    shapes |= double_conv_entries("down1.maxpool_conv.0.double_conv", 32, 256)
    shapes |= double_conv_entries("up3.conv.double_conv", 288, 32, c_mid=144)  # dead U-Net block
    shapes |= {"temporal_encoder.inconv.weight": (256, 256, 1), "temporal_encoder.inconv.bias": (256,)}
    for i in range(3):
        shapes |= transformer_layer_entries(f"temporal_encoder.layer_stack.{i}")
        shapes |= transformer_layer_entries(f"temporal_encoder.transformer_encoder.layers.{i}")
    for name in ("in_norm", "out_norm", "transformer_encoder.norm"):
        shapes |= {f"temporal_encoder.{name}.weight": (256,), f"temporal_encoder.{name}.bias": (256,)}
    shapes |= {"temporal_encoder.mlp.0.weight": (256, 256), "temporal_encoder.mlp.0.bias": (256,)}
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"temporal_encoder.mlp.1.{name}"] = (256,)
    shapes["temporal_encoder.mlp.1.num_batches_tracked"] = ()
    gen = torch.Generator().manual_seed(seed)
    return {
        k: torch.randint(0, 100, s, generator=gen)
        if k.endswith("num_batches_tracked")
        else torch.randn(s, generator=gen)
        for k, s in shapes.items()
    }


def test_documented_authors_layout_has_documented_parameter_count():
    state = authors_backbone_state(10)
    n = sum(
        v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert n == 5_964_064  # docs/method.md §1.6, PASTIS backbone file


@pytest.mark.parametrize("dataset,channels,suffix", [("pastis", 10, "sttrans"), ("mtlcc", 13, "utae")])
def test_authors_backbone_maps_every_used_key(tmp_path, dataset, channels, suffix):
    state = authors_backbone_state(channels)
    path = tmp_path / f"checkpoint_99.{suffix}.tar"
    torch.save(state, path)
    model = STCLNSegmenter(paper_config(dataset))
    n_loaded = load_pretrained_backbone(model, path)
    ours = model.backbone.state_dict()
    assert n_loaded == len(ours)
    # independent spot checks of the mapping, one per key family
    assert torch.equal(ours["spatial.block1.0.weight"], state["inc.double_conv.0.weight"])
    assert torch.equal(ours["spatial.block2.4.running_var"], state["down1.maxpool_conv.0.double_conv.4.running_var"])
    assert torch.equal(ours["temporal.in_norm.bias"], state["temporal_encoder.in_norm.bias"])
    for i in range(3):
        prefix = f"temporal_encoder.layer_stack.{i}"
        assert torch.equal(ours[f"temporal.layers.{i}.qkv.weight"], state[f"{prefix}.self_attn.in_proj_weight"])
        assert torch.equal(ours[f"temporal.layers.{i}.proj.bias"], state[f"{prefix}.self_attn.out_proj.bias"])
        assert torch.equal(ours[f"temporal.layers.{i}.linear2.weight"], state[f"{prefix}.linear2.weight"])
        assert torch.equal(ours[f"temporal.layers.{i}.norm1.weight"], state[f"{prefix}.norm1.weight"])
    dead = (
        "up3.",
        "temporal_encoder.inconv",
        "temporal_encoder.out_norm",
        "temporal_encoder.mlp",
        "temporal_encoder.transformer_encoder",
    )
    used = [k for k in state if not k.startswith(dead)]
    assert len(used) == len(ours)
    assert sorted(v.numel() for k, v in state.items() if k in used) == sorted(v.numel() for v in ours.values())


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda s: s.pop("temporal_encoder.layer_stack.2.linear1.weight"), "missing"),
        (
            lambda s: s.update({"temporal_encoder.layer_stack.0.linear1.weight": torch.zeros(1024, 128)}),
            "shape mismatch",
        ),
        (lambda s: s.update({"inc.double_conv.9.weight": torch.zeros(3)}), "inc.double_conv.9.weight"),
        (lambda s: s.update({"some_other_head.weight": torch.zeros(3)}), "some_other_head.weight"),
    ],
)
def test_wrong_authors_file_is_rejected_clearly(tmp_path, corrupt, message):
    state = authors_backbone_state(10)
    corrupt(state)
    path = tmp_path / "checkpoint_99.sttrans.tar"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_pretrained_backbone(STCLNSegmenter(paper_config("pastis")), path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_wrong_band_count_is_rejected(tmp_path):
    path = tmp_path / "checkpoint_99.utae.tar"
    torch.save(authors_backbone_state(13), path)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_pretrained_backbone(STCLNSegmenter(paper_config("pastis")), path)


def test_missing_and_garbage_files(tmp_path):
    model = STCLNSegmenter(tiny_config())
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained_backbone(model, tmp_path / "nope.tar")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_pretrained_backbone(model, garbage)


def test_round_trip_is_bit_exact_and_plain(tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    model = STCLNPretrain(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(1, 3, 10, 4, 4), torch.arange(3)[None], torch.rand(1, 3, 4, 4) < 0.5)["loss"].backward()
    optimizer.step()
    state = {
        "kind": "full",
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
        "model_config": config.to_dict(),
        "args": {"lr": 1e-3},
        "metrics": {"loss": 0.5},
    }
    path = tmp_path / "run" / "last.tar"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)  # weights_only=True
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    for k, v in state["model"].items():
        assert torch.equal(loaded["model"][k], v) and loaded["model"][k].dtype == v.dtype
    assert loaded["optimizer"]["state"][0]["exp_avg"].equal(state["optimizer"]["state"][0]["exp_avg"])
    assert loaded["model_config"] == config.to_dict() and loaded["epoch"] == 3


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.tar"
    save_checkpoint(path, {"epoch": 1})

    def exploding_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.tar"]


def test_every_checkpoint_kind_gives_the_same_backbone(tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    pretrain = STCLNPretrain(config)
    full = tmp_path / "last.tar"
    save_checkpoint(full, {"kind": "full", "model": pretrain.state_dict(), "model_config": config.to_dict()})
    export = tmp_path / "checkpoint_0.stcln.tar"
    save_checkpoint(export, backbone_export(pretrain, config, 0))
    wrapped = tmp_path / "ddp_compiled.tar"
    torch.save({"module._orig_mod." + k: v for k, v in pretrain.state_dict().items()}, wrapped)
    reference = pretrain.backbone.state_dict()
    for path in (full, export, wrapped):
        model = STCLNSegmenter(config)
        load_pretrained_backbone(model, path)
        for k, v in model.backbone.state_dict().items():
            assert torch.equal(v, reference[k]), (path.name, k)


def test_architecture_mismatch_named(tmp_path):
    config = tiny_config()
    path = tmp_path / "export.tar"
    save_checkpoint(path, backbone_export(STCLNPretrain(config), config, 0))
    with pytest.raises(CheckpointError, match="in_channels: file 10 vs model 13"):
        load_pretrained_backbone(STCLNSegmenter(tiny_config(in_channels=13)), path)


def small_fixture_copy(tmp_path: Path) -> Path:
    fixture = tmp_path / "fixture"
    shutil.copytree(SMALL_PARITY_FIXTURE, fixture)
    for path in fixture.iterdir():
        path.chmod(0o644)
    return fixture


def with_dead_transformer(state: dict) -> dict:
    """Put back the never-run ``transformer_encoder`` of the authors' layout, at its fixed sizes (256/1024)."""
    state = dict(state)
    for i in range(3):
        state |= {
            k: torch.zeros(v)
            for k, v in transformer_layer_entries(f"temporal_encoder.transformer_encoder.layers.{i}").items()
        }
    state |= {f"temporal_encoder.transformer_encoder.norm.{n}": torch.zeros(256) for n in ("weight", "bias")}
    return state


def test_parity_command_fails_on_a_wrong_expectation(tmp_path, capsys):
    fixture = small_fixture_copy(tmp_path)
    io = torch.load(fixture / "io.pt", weights_only=True)
    io["expected_logits"] = io["expected_logits"] + 1e-3
    torch.save(io, fixture / "io.pt")
    assert check_parity.main(["--fixture", str(fixture)]) == 1
    assert float(capsys.readouterr().out.strip().splitlines()[-1].split("=")[1]) >= 1e-4


def finetune_args(*argv: str):
    from utils.finetune import parse_args

    return parse_args("mtlcc", "test", ["--data_root", "unused", *argv])


def test_authors_layout_of_other_sizes_through_pretrain_pth(tmp_path):
    """13 bands, widths 8/32, feed-forward 4 x 32 = 128, dead modules at 256/1024: sizes come from the tensors."""
    from types import SimpleNamespace

    from utils.finetune import build_model

    path = tmp_path / "checkpoint_99.utae.tar"
    torch.save(
        with_dead_transformer(torch.load(SMALL_PARITY_FIXTURE / "checkpoint_99.sttrans.tar", weights_only=True)), path
    )
    args = finetune_args("--pretrain_pth", str(path))  # the paper preset: widths 32/256, FFN 1024
    model, config = build_model(args, SimpleNamespace(sources=("S2",), in_channels=13, num_classes=18), runtime=None)
    assert (config.widths, config.d_ffn, config.n_layers, config.n_heads) == ((8, 32), 128, 3, 8)
    head = map_authors_head(torch.load(SMALL_PARITY_FIXTURE / "head_state_dict.pt", weights_only=True))
    model.load_state_dict(model.state_dict() | head)
    io = torch.load(SMALL_PARITY_FIXTURE / "io.pt", weights_only=True)
    with torch.no_grad():
        logits = model.eval()(io["input"], io["positions"])
    assert (logits - io["expected_logits"]).abs().max().item() < 1e-4  # the authors' own output


def test_authors_layout_with_other_band_count_is_refused(tmp_path):
    from types import SimpleNamespace

    from utils.finetune import build_model

    path = tmp_path / "checkpoint_99.utae.tar"
    shutil.copyfile(SMALL_PARITY_FIXTURE / "checkpoint_99.sttrans.tar", path)
    with pytest.raises(CheckpointError, match="backbone expects 13 bands, the data has 10"):
        build_model(
            finetune_args("--pretrain_pth", str(path)),
            SimpleNamespace(sources=("S2",), in_channels=10, num_classes=20),
            runtime=None,
        )


@pytest.mark.parametrize(
    "saved,flags,field",
    [
        (dict(positions="doy"), [], "positions: backbone 'doy' vs model 'index'"),
        (dict(pe_period=500.0), [], "pe_period: backbone 500.0 vs model 1000.0"),
        (dict(), ["--positions", "doy"], "positions: backbone 'index' vs model 'doy'"),
    ],
)
def test_backbone_with_another_positional_encoding_is_refused(tmp_path, saved, flags, field):
    from types import SimpleNamespace

    from utils.finetune import build_model

    config = tiny_config(**saved)
    path = tmp_path / "export.tar"
    save_checkpoint(path, backbone_export(STCLNPretrain(config), config, 0))
    info = SimpleNamespace(sources=("S2",), in_channels=10, num_classes=20)
    args = finetune_args("--preset", "tiny", "--pretrain_pth", str(path), *flags)
    if not saved:  # the authors' files: date indices, period 1000
        path = tmp_path / "checkpoint_99.utae.tar"
        torch.save(torch.load(SMALL_PARITY_FIXTURE / "checkpoint_99.sttrans.tar", weights_only=True), path)
        args.pretrain_pth, info = path, SimpleNamespace(sources=("S2",), in_channels=13, num_classes=18)
    with pytest.raises(CheckpointError, match=field.replace("(", r"\(")):
        build_model(args, info, runtime=None)
    args.allow_encoding_change = True
    model, loaded = build_model(args, info, runtime=None)
    assert loaded.positions == args.positions  # the flags decide, the weights are the file's
    assert torch.equal(
        model.backbone.spatial.block1[0].weight,
        load_checkpoint(path)["model"]["spatial.block1.0.weight"]
        if saved
        else torch.load(path, weights_only=True)["inc.double_conv.0.weight"],
    )


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("config.json", "{not json", "not valid JSON"),
        ("config.json", "[1, 2]", "expected a JSON object"),
        ("config.json", '{"n_channels": 13}', "missing keys"),
        (
            "config.json",
            '{"n_channels": 13, "n_classes": 18, "d_model": 64, "n_head": 8, "widths": [8, 64]}',
            "differ from the tensors",
        ),
        (
            "config.json",
            '{"n_channels": 13, "n_classes": 18, "d_model": 32, "n_head": "8", "widths": [8, 32]}',
            "positive integers",
        ),
        ("io.pt", {"input": torch.zeros(1)}, "expected a dict of tensors"),
        (
            "io.pt",
            {
                "input": torch.zeros(2, 7, 13, 4, 4),
                "positions": torch.zeros(3),
                "expected_logits": torch.zeros(1, 18, 4, 4),
            },
            "shapes",
        ),
        ("io.pt", "truncated", "not a readable checkpoint"),
    ],
)
def test_parity_command_bad_fixture_files(tmp_path, capsys, name, content, message):
    fixture = small_fixture_copy(tmp_path)
    if isinstance(content, dict):
        torch.save(content, fixture / name)
    elif name == "io.pt":
        (fixture / name).write_bytes((SMALL_PARITY_FIXTURE / name).read_bytes()[:1000])
    else:
        (fixture / name).write_text(content)
    assert check_parity.main(["--fixture", str(fixture)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {fixture / name}") and message in err and err.count("\n") == 1, err


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    """Writes capped by RLIMIT_FSIZE (as `ulimit -f`): the second, larger checkpoint cannot be written;
    the error says so in one line and the first file is untouched (torch's zip writer used to fail
    with a C++ assertion instead)."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import resource, signal, torch
        from utils.checkpoint import save_checkpoint
        from utils.errors import CheckpointError
        path = {str(tmp_path / "last.tar")!r}
        save_checkpoint(path, {{"w": torch.zeros(10)}})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
            save_checkpoint(path, {{"w": torch.zeros(1_000_000)}})
        except CheckpointError as err:
            print("ERROR", err)
        print("LOADS", torch.load(path, weights_only=True)["w"].shape[0])
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]
    )
    assert out.returncode == 0, out.stderr
    error = next(line for line in out.stdout.splitlines() if line.startswith("ERROR"))
    assert "cannot write the checkpoint (File too large); the previous checkpoint is intact" in error
    assert "LOADS 10" in out.stdout and not list(tmp_path.glob(".last.tar.*"))


def test_resume_applies_the_lr_of_the_resuming_command(tmp_path, caplog):
    """--resume --lr X: the optimizer continues with X (what config.json records), not the saved lr."""
    from models import STCLNSegmenter, tiny_config
    from utils.checkpoint import full_state, resume_state, save_checkpoint

    config = tiny_config(in_channels=2, num_classes=3)
    model = STCLNSegmenter(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    save_checkpoint(tmp_path / "last.tar", full_state(model, optimizer, config, argparse.Namespace(), 4, {}))
    resumed = torch.optim.Adam(model.parameters(), lr=1e-2)
    with caplog.at_level("INFO", logger="stcln"):
        assert resume_state(tmp_path, model, resumed, config, trusted=False)[0] == 5
    assert [group["lr"] for group in resumed.param_groups] == [1e-2]
    assert "--lr 0.01 replaces the saved 0.001 from epoch 6 on" in caplog.text
    same = torch.optim.Adam(model.parameters(), lr=1e-3)
    resume_state(tmp_path, model, same, config, trusted=False)
    assert [group["lr"] for group in same.param_groups] == [1e-3]


def test_a_crafted_pickle_is_refused_in_one_line_without_a_warning_first(tmp_path, recwarn):
    import pickle

    from utils.checkpoint import load_checkpoint
    from utils.errors import CheckpointError

    path = tmp_path / "crafted.tar"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=5))
    with pytest.raises(CheckpointError, match="crafted.tar: not a readable checkpoint"):
        load_checkpoint(path)
    assert not [w for w in recwarn if "pickle protocol" in str(w.message)]
