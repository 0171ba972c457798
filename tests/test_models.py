"""Model tests on tiny configs: shapes, padding invariance, gradients, STA gate, parity."""

from pathlib import Path

import pytest
import torch

from bench.train_step import saved_bytes_of_forward
from models import STCLNPretrain, STCLNSegmenter, tiny_config

REPO = Path(__file__).resolve().parents[1]
PARITY_FIXTURE = REPO.parent / "shared" / "fixtures" / "authors_parity"
SMALL_PARITY_FIXTURE = REPO / "tests" / "data" / "authors_parity_small"  # 13 bands, widths 8/32


def index_positions(B: int, T: int) -> torch.Tensor:
    return torch.arange(T).expand(B, T)


@pytest.mark.parametrize("B,T,C,H,W", [(1, 1, 10, 8, 8), (2, 5, 10, 16, 16), (3, 7, 13, 12, 20), (2, 4, 4, 20, 6)])
def test_output_shapes(B, T, C, H, W):
    torch.manual_seed(0)
    config = tiny_config(in_channels=C, num_classes=7)
    x = torch.randn(B, T, C, H, W)
    logits = STCLNSegmenter(config)(x, index_positions(B, T))
    assert logits.shape == (B, 7, H, W)
    mask = torch.rand(B, T, H, W) < 0.4
    out = STCLNPretrain(config)(x, index_positions(B, T), mask)
    assert out["pred"].shape == (B, T, C, H, W)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])


@pytest.mark.parametrize("sta_scale", ["d_model", "d_model_t"])
@pytest.mark.parametrize("positions", ["index", "doy"])
def test_padded_steps_do_not_change_outputs(sta_scale, positions):
    """A T=4 series alone and the same series padded to T=7 in a batch give the same logits."""
    torch.manual_seed(0)
    config = tiny_config(in_channels=5, num_classes=6, use_pad_mask=True, sta_scale=sta_scale, positions=positions)
    model = STCLNSegmenter(config).eval()
    with torch.no_grad():
        model.sta.gate.fill_(0.8)  # make the STA path count
    short = torch.randn(1, 4, 5, 9, 11)
    other = torch.randn(1, 7, 5, 9, 11)
    days_short = torch.tensor([[3, 20, 41, 70]])
    days_other = torch.arange(7)[None] * 10
    batch = torch.cat([torch.cat([short, torch.full((1, 3, 5, 9, 11), 123.0)], dim=1), other])
    pad_mask = torch.tensor([[False] * 4 + [True] * 3, [False] * 7])
    days = torch.cat([torch.cat([days_short, torch.tensor([[999, 999, 999]])], 1), days_other])
    pos = days if positions == "doy" else index_positions(2, 7)
    with torch.no_grad():
        alone = model(short, days_short if positions == "doy" else index_positions(1, 4))
        padded = model(batch, pos, pad_mask)
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-5)
    # train mode with dropout off: BatchNorm statistics must ignore padded frames too
    config_train = tiny_config(in_channels=5, num_classes=6, use_pad_mask=True, dropout=0.0)
    torch.manual_seed(1)
    model = STCLNSegmenter(config_train).train()
    with torch.no_grad():
        alone = model(short, index_positions(1, 4))
        padded = model(torch.cat([short, torch.zeros(1, 3, 5, 9, 11)], 1), index_positions(1, 7), pad_mask[:1])
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_without_pad_mask_padding_changes_outputs():
    """The faithful default (no pad mask) lets padded steps leak in, as the reference does."""
    torch.manual_seed(0)
    model = STCLNSegmenter(tiny_config(in_channels=5, num_classes=6)).eval()
    short = torch.randn(1, 4, 5, 8, 8)
    padded = torch.cat([short, torch.zeros(1, 3, 5, 8, 8)], dim=1)
    with torch.no_grad():
        diff = (model(short, index_positions(1, 4)) - model(padded, index_positions(1, 7))).abs().max()
    assert diff > 1e-3


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    config = tiny_config(in_channels=6, num_classes=5, mask_token="band")
    x = torch.randn(2, 5, 6, 8, 8)
    segmenter = STCLNSegmenter(config)
    with torch.no_grad():
        segmenter.sta.gate.fill_(0.5)  # at 0 the attention branch is (correctly) cut off
    segmenter(x, index_positions(2, 5)).square().mean().backward()
    pretrain = STCLNPretrain(config)
    mask = torch.rand(2, 5, 8, 8) < 0.5
    pretrain(x, index_positions(2, 5), mask)["loss"].backward()
    for model in (segmenter, pretrain):
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_zero_gate_equals_no_fusion_path():
    torch.manual_seed(0)
    model = STCLNSegmenter(tiny_config(in_channels=4, num_classes=3)).eval()
    assert model.sta.gate.item() == 0.0
    x = torch.randn(2, 5, 4, 6, 10)
    pos = index_positions(2, 5)
    with torch.no_grad():
        logits = model(x, pos)
        feats = model.backbone(x, pos)
        pooled = feats["temporal"].amax(dim=3)  # (B, H, W, D)
        manual = model.classifier(model.sta.value(pooled)).permute(0, 3, 1, 2)
    torch.testing.assert_close(logits, manual, atol=1e-6, rtol=1e-6)


def test_chunked_sta_is_exact():
    torch.manual_seed(0)
    config = tiny_config(in_channels=4, num_classes=3)
    model = STCLNSegmenter(config).eval()
    with torch.no_grad():
        model.sta.gate.fill_(1.0)
        x = torch.randn(1, 3, 4, 10, 10)
        full = model(x, index_positions(1, 3))
        model.sta.chunk = 7
        chunked = model(x, index_positions(1, 3))
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-6)


def test_masked_loss_ignores_unmasked_cells_and_handles_empty_mask():
    torch.manual_seed(0)
    model = STCLNPretrain(tiny_config(in_channels=3, num_classes=2))
    x = torch.randn(1, 2, 3, 4, 4)
    pos = index_positions(1, 2)
    empty = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    out = model(x, pos, empty)
    assert out["loss"].item() == 0.0
    out["loss"].backward()  # still differentiable, no NaN
    mask = empty.clone()
    mask[0, 1, 2, 3] = True
    out = model(x, pos, mask)
    expected = (out["pred"][0, 1, :, 2, 3] - x[0, 1, :, 2, 3]).square().mean()
    torch.testing.assert_close(out["loss"], expected)


@pytest.mark.parametrize("fixture", [
    SMALL_PARITY_FIXTURE,
    pytest.param(PARITY_FIXTURE, marks=pytest.mark.skipif(not PARITY_FIXTURE.is_dir(), reason="24 MB shared fixture absent")),
], ids=["small", "paper"])
def test_authors_parity_command(fixture, capsys):
    """`python -m utils.check_parity --fixture DIR` (its main, in this process; test_scripts runs its --help)."""
    from utils import check_parity

    status = check_parity.main(["--fixture", str(fixture)])
    captured = capsys.readouterr()
    last = captured.out.strip().splitlines()[-1]
    assert last.startswith("max_abs_diff="), captured.out + captured.err
    assert float(last.split("=")[1]) < 1e-4
    assert status == 0


def test_parity_fixture_whose_expected_output_has_another_shape_is_one_line(tmp_path, capsys):
    import shutil

    from utils import check_parity

    fixture = tmp_path / "fixture"
    shutil.copytree(SMALL_PARITY_FIXTURE, fixture)
    io = torch.load(fixture / "io.pt", weights_only=True)
    io["expected_logits"] = io["expected_logits"][:, :, :-1]  # one row short
    torch.save(io, fixture / "io.pt")
    assert check_parity.main(["--fixture", str(fixture)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(fixture / "io.pt") in err and "expected_logits has shape" in err


def test_paper_parameter_count():
    from models import paper_config

    pastis = STCLNSegmenter(paper_config("pastis"))
    mtlcc = STCLNSegmenter(paper_config("mtlcc"))
    # docs/method.md §1.6: used backbone = inc + down1 + layer_stack + in_norm
    assert sum(p.numel() for p in pastis.backbone.parameters()) == 12_224 + 664_576 + 2_369_280 + 512
    assert sum(p.numel() for p in pastis.parameters()) == 3_248_341
    assert sum(p.numel() for p in mtlcc.backbone.parameters()) == 13_088 + 664_576 + 2_369_280 + 512


def analytic_parameters(C: int, K: int, w1: int, D: int, F: int, L: int) -> int:
    """Parameters of STCLNSegmenter counted by hand from the architecture (paper §2.1, Fig. 2)."""
    spatial = 9 * C * w1 + 9 * w1 * w1 + 9 * w1 * D + 9 * D * D + 2 * (2 * w1 + 2 * D)  # 4 bias-free convs + norms
    layer = (3 * D * D + 3 * D) + (D * D + D) + (F * D + F) + (D * F + D) + 4 * D  # qkv, proj, FFN, 2 LayerNorms
    temporal = 2 * D + L * layer  # input norm + layers
    sta = 1 + 3 * D * D  # gate + bias-free q, k, v
    return spatial + temporal + sta + K * D + K


@pytest.mark.parametrize("preset,sizes", [("tiny", (8, 32, 64, 2)), ("small", (16, 64, 128, 2)), ("paper", (32, 256, 1024, 3))])
def test_preset_sizes_and_parameter_counts(preset, sizes):
    from argparse import Namespace

    from models.config import PRESETS
    from utils.args import model_config_from_args

    args = Namespace(positions="index", use_pad_mask=False, sta_scale="d_model", sta_chunk=0, mask_token="scalar",
                     dropout=None, dataset="pastis", data_root="x", smoke=False, preset=preset)
    config = model_config_from_args(args, 10, 20)
    assert config == PRESETS[preset](in_channels=10, num_classes=20)
    w1, D, F, L = sizes
    assert (config.widths, config.d_ffn, config.n_layers, config.n_heads) == ((w1, D), F, L, 4 if preset != "paper" else 8)
    count = sum(p.numel() for p in STCLNSegmenter(config).parameters())
    assert count == analytic_parameters(10, 20, w1, D, F, L)
    assert count == {"tiny": 33_861, "small": 130_805, "paper": 3_248_341}[preset]


@pytest.mark.parametrize("fast_dropout", [False, True], ids=["dropout", "fast_dropout"])
@pytest.mark.parametrize("head", ["segmenter", "pretrain"])
def test_grad_checkpoint_keeps_gradients_and_saves_memory(head, fast_dropout):
    """Checkpointing recomputes the CNN and Transformer layers in backward: same loss, gradients
    (dropout on, either kind of dropout, padded dates) and BatchNorm statistics, fewer
    activations kept for backward."""
    import copy

    torch.manual_seed(0)
    config = tiny_config(in_channels=5, num_classes=6, use_pad_mask=head == "segmenter", dropout=0.2)
    plain = STCLNSegmenter(config) if head == "segmenter" else STCLNPretrain(config)
    with torch.no_grad():
        if head == "segmenter":
            plain.sta.gate.fill_(0.5)
    plain.backbone.set_fast_dropout(fast_dropout)
    ckpt = copy.deepcopy(plain)
    ckpt.backbone.set_grad_checkpointing(True)
    x = torch.randn(2, 5, 5, 8, 8)
    pos = index_positions(2, 5)
    pad_mask = torch.tensor([[False] * 3 + [True] * 2, [False] * 5])
    mask = torch.rand(2, 5, 8, 8) < 0.4
    target = torch.randint(0, 6, (2, 8, 8))

    def loss_of(model):
        if head == "segmenter":
            return torch.nn.functional.cross_entropy(model(x, pos, pad_mask), target)
        return model(x, pos, mask)["loss"]

    results = []
    for model in (plain, ckpt):
        model.train()
        torch.manual_seed(123)  # same dropout masks in both runs
        loss, saved = saved_bytes_of_forward(lambda: loss_of(model))
        loss.backward()
        results.append((loss, saved))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=0)
    assert results[1][1] < 0.5 * results[0][1], (results[1][1], results[0][1])
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
    for (name, b), c in zip(plain.named_buffers(), ckpt.buffers()):
        torch.testing.assert_close(c, b, rtol=0, atol=0, msg=name)  # BatchNorm counted each batch once


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fast_dropout_distribution_mask_rule_and_gradient(p, dtype):
    """--fast_dropout: values are 0 or x / (1 - p); the keep rate is 1 - round(p * 2**16) / 2**16 within
    5 binomial sigmas; the four masks cut from one 64-bit word are uncorrelated; the mask is the
    documented rule applied to the generator's words; the gradient is the same mask; a seed
    reproduces it."""
    from models.temporal import fast_dropout

    n = 400_000
    x = torch.full((n,), 2.0, dtype=dtype, requires_grad=True)
    torch.manual_seed(7)
    y = fast_dropout(x, p)
    kept = y != 0
    scale = torch.tensor(1 / (1 - p), dtype=dtype)
    assert torch.equal(y[kept], (x.detach() * scale)[kept])
    p_hat = round(p * 2**16) / 2**16
    assert abs(kept.double().mean().item() - (1 - p_hat)) < 5 * (p_hat * (1 - p_hat) / n) ** 0.5
    by_word = kept.view(-1, 4).double()  # (n/4 words, 4 draws each)
    corr = torch.corrcoef(by_word.T)
    assert (corr - torch.eye(4, dtype=torch.float64)).abs().max() < 0.03, corr
    torch.manual_seed(7)  # the rule, re-derived from the same generator state
    words = torch.empty(n // 4, dtype=torch.int64).random_(-(2**63), None)
    assert torch.equal(kept, words.view(torch.int16) >= round(p * 2**16) - 2**15)
    grad = torch.randn(n).to(dtype)
    y.backward(grad)
    assert torch.equal(x.grad, grad * (kept.to(dtype) * scale))
    torch.manual_seed(8)
    assert not torch.equal(fast_dropout(x.detach(), p) != 0, kept)


def test_fast_dropout_attention_equals_sdpa_without_dropout_and_eval_is_unchanged():
    """The attention written out for --fast_dropout is SDPA's (p = 0, with and without a key mask);
    a model in eval mode gives bitwise the same outputs with the option on or off."""
    import torch.nn.functional as F

    from models.temporal import attention_fast_dropout

    torch.manual_seed(0)
    q, k, v = torch.randn(3, 6, 4, 9, 8).unbind(0)  # 3 x (N, nh, T, dh)
    mask = torch.rand(6, 1, 1, 9) > 0.4
    mask[..., 0] = True
    for m in (None, mask):
        torch.testing.assert_close(attention_fast_dropout(q, k, v, m, 0.0), F.scaled_dot_product_attention(q, k, v, attn_mask=m),
                                   rtol=0, atol=1e-6)
    model = STCLNSegmenter(tiny_config(in_channels=5, num_classes=4)).eval()
    x, pos = torch.randn(2, 5, 5, 8, 8), index_positions(2, 5)
    reference = model(x, pos)
    model.backbone.set_fast_dropout(True)
    assert torch.equal(model(x, pos), reference)
    model.train()
    torch.manual_seed(1)
    assert not torch.equal(model(x, pos), reference)  # dropout is on in training


def test_fast_dropout_under_torch_compile_is_inductors_dropout():
    """Compiled, the option defers to F.dropout (inductor draws its own masks): the step runs and drops out."""
    torch.manual_seed(0)
    model = STCLNPretrain(tiny_config(in_channels=4, dropout=0.5))
    model.backbone.set_fast_dropout(True)
    compiled = torch.compile(model, backend="aot_eager")
    x, pos, mask = torch.randn(1, 3, 4, 6, 6), index_positions(1, 3), torch.rand(1, 3, 6, 6) < 0.4
    losses = [compiled(x, pos, mask)["loss"] for _ in range(2)]
    losses[0].backward()
    assert losses[0].item() != losses[1].item()  # different masks each call
    assert all(p.grad is not None for p in model.backbone.temporal.parameters())
