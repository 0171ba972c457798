"""Sliding-window inference (utils/predict.py) against full-scene forward passes of the same model.

What is exactly comparable (eval mode, same weights):
* one window covering the scene: the full-scene pass, for any model (STA included);
* overlapping windows, STA gate = 0: every output depends only on the pixel's 9x9 neighbourhood
  (two DoubleConv blocks with eval BatchNorm, per-pixel temporal branch), so with ``margin`` = 4
  (the receptive radius) each kept window pixel, hence the blend, equals the full-scene pass;
* overlapping windows with a non-zero gate attend only within their window: they differ from the
  full-scene pass, and the test checks that they do (so the equalities above are not vacuous).
"""

import numpy as np
import pytest
import torch

import predict_STCLN
from models import STCLNSegmenter, tiny_config
from utils.errors import STCLNError
from utils.predict import axis_weight, class_areas, plan_windows, sliding_window_logits, window_starts

T, C, K, H, W = 4, 3, 5, 21, 26
RECEPTIVE_RADIUS = 4  # 4 convolutions 3x3


def make_model(gate: float) -> STCLNSegmenter:
    torch.manual_seed(0)
    model = STCLNSegmenter(tiny_config(in_channels=C, num_classes=K))
    for module in model.modules():  # non-trivial eval-mode BatchNorm
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        model.sta.gate.fill_(gate)
    return model.eval()


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(T, C, H, W)).astype(np.float32)


def full_pass(model, scene) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(scene)[None], torch.arange(T)[None], torch.zeros(1, T, dtype=torch.bool))[0].numpy()


def sliding(model, scene, window, stride, blend="uniform", margin=0, batch_size=3) -> tuple[np.ndarray, list]:
    plan = plan_windows(H, W, window, stride, blend, margin)
    out, calls = np.full((K, H, W), np.nan, dtype=np.float32), []

    def keep(first, logits):
        calls.append((first, logits.shape[1]))
        out[:, first:first + logits.shape[1]] = logits

    sliding_window_logits(model, lambda r, c, h, w: scene[:, :, r:r + h, c:c + w], torch.arange(T), plan, K, keep,
                          batch_size=batch_size, progress=False)
    return out, calls


def test_one_window_over_the_scene_is_the_full_forward_pass(scene):
    model = make_model(gate=0.7)
    logits, calls = sliding(model, scene, window=64, stride=32)
    np.testing.assert_allclose(logits, full_pass(model, scene), atol=1e-5)
    assert calls == [(0, H)]


@pytest.mark.parametrize("blend", ["uniform", "linear"])
def test_overlapping_windows_equal_the_full_pass_with_gate_zero_and_receptive_margin(scene, blend):
    model = make_model(gate=0.0)
    logits, calls = sliding(model, scene, window=12, stride=3, blend=blend, margin=RECEPTIVE_RADIUS)
    np.testing.assert_allclose(logits, full_pass(model, scene), atol=1e-5)
    rows = [row for first, n in calls for row in range(first, first + n)]
    assert rows == list(range(H))  # every row handed over once, top to bottom


def test_windows_differ_from_the_full_pass_where_the_comparison_is_not_exact(scene):
    full_gate = make_model(gate=0.7)
    attended, _ = sliding(full_gate, scene, window=12, stride=6)
    assert np.abs(attended - full_pass(full_gate, scene)).max() > 1e-3  # STA sees only its window
    no_gate = make_model(gate=0.0)
    no_margin, _ = sliding(no_gate, scene, window=12, stride=6)
    difference = np.abs(no_margin - full_pass(no_gate, scene)).max(axis=0)
    assert difference.max() > 1e-4  # zero padding at inner window edges reaches 4 px in
    corner = difference[:RECEPTIVE_RADIUS, :RECEPTIVE_RADIUS]  # only in window (0, 0), far from its inner edges
    assert corner.max() < 1e-5


def test_blend_is_the_weighted_mean_of_the_window_logits(scene):
    """Rolling row-strip accumulation vs a direct full-size accumulation of every window."""
    model = make_model(gate=0.7)
    window, stride, margin = 10, 4, 1
    logits, _ = sliding(model, scene, window, stride, "linear", margin, batch_size=2)
    total, weight = np.zeros((K, H, W)), np.zeros((H, W))
    for top in window_starts(H, window, stride):
        for left in window_starts(W, window, stride):
            part = full_pass(model, scene[:, :, top:top + window, left:left + window])
            w = np.outer(axis_weight(top, window, H, "linear", margin), axis_weight(left, window, W, "linear", margin))
            total[:, top:top + window, left:left + window] += part * w
            weight[top:top + window, left:left + window] += w
    np.testing.assert_allclose(logits, total / weight, atol=1e-5)


def test_window_plan_covers_the_scene_and_refuses_gaps():
    assert window_starts(21, 12, 5) == (0, 5, 9)
    assert window_starts(8, 12, 5) == (0,)
    plan = plan_windows(8, 30, 12, 6)
    assert (plan.window_h, plan.window_w, plan.col_starts) == (8, 12, (0, 6, 12, 18))
    with pytest.raises(STCLNError, match="--stride"):
        plan_windows(40, 40, 12, 6, margin=4)  # 6 > 12 - 2 * 4: pixels between kept parts


def test_class_areas_count_pixels_and_hectares():
    rows = class_areas(np.array([[0, 1], [1, 1]]), ["a", "b", "c"], pixel_area_m2=100.0)
    assert [(r["pixels"], r["hectares"]) for r in rows] == [(1, 0.01), (3, 0.03), (0, 0.0)]
    assert "hectares" not in class_areas(np.zeros((2, 2), int), ["a"], None)[0]


def test_help_documents_every_flag():
    parser = predict_STCLN.get_parser()
    for action in parser._actions:
        assert action.help and action.help.strip(), action.option_strings
    text = parser.format_help()
    for flag in ("--checkpoint", "--geotiff_dir", "--cube", "--dates", "--window", "--stride", "--blend", "--margin",
                 "--batch_size", "--pixel_size_m", "--data_root", "--output_dir"):
        assert flag in text
