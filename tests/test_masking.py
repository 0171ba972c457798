"""Masking tests: ratio, eligibility gate, padding, determinism, authors' NDVI."""

import pytest
import torch

from utils.masking import MaskingConfig, build_mask, eligible_frames, ndvi_from_input, sample_mask


def test_cell_mask_ratio_matches_on_eligible_frames():
    gen = torch.Generator().manual_seed(0)
    eligible = torch.tensor([[True, False, True, True], [False, True, True, False]])
    mask = sample_mask(eligible, (64, 64), MaskingConfig(ratio=0.4), gen)
    assert mask.shape == (2, 4, 64, 64) and mask.dtype == torch.bool
    assert not mask[~eligible].any()  # ineligible frames are never masked
    ratio = mask[eligible].float().mean().item()
    n = eligible.sum().item() * 64 * 64
    assert abs(ratio - 0.4) < 4 * (0.4 * 0.6 / n) ** 0.5  # within 4 standard errors
    # independence across cells: neighbouring pixels are uncorrelated
    a, b = mask[eligible][:, :, :-1].float(), mask[eligible][:, :, 1:].float()
    assert abs(((a - a.mean()) * (b - b.mean())).mean().item()) < 0.01


def test_frame_mode_masks_whole_dates():
    gen = torch.Generator().manual_seed(1)
    eligible = torch.ones(8, 50, dtype=torch.bool)
    mask = sample_mask(eligible, (5, 5), MaskingConfig(ratio=0.3, mode="frame"), gen)
    per_frame = mask.flatten(2)
    assert torch.all(per_frame.all(dim=2) | ~per_frame.any(dim=2))
    assert abs(per_frame[:, :, 0].float().mean().item() - 0.3) < 0.08


def test_vegetation_gate_rule():
    config = MaskingConfig()
    ndvi = torch.full((1, 4, 10, 10), 0.5)
    ndvi[0, 1, :2, :] = 0.0  # 80% vegetated -> not eligible
    ndvi[0, 2, 0, 0] = 0.1  # 99% vegetated -> eligible
    ndvi[0, 3] = 0.2  # exactly the threshold is not "> 0.2"
    pad = torch.tensor([[False, False, False, False]])
    assert eligible_frames(ndvi, pad, config).tolist() == [[True, False, True, False]]
    pad = torch.tensor([[True, False, False, False]])
    assert eligible_frames(ndvi, pad, config).tolist() == [[False, False, True, False]]


def test_mask_is_deterministic_under_a_seeded_generator():
    eligible = torch.ones(2, 3, dtype=torch.bool)
    config = MaskingConfig()
    m1 = sample_mask(eligible, (8, 8), config, torch.Generator().manual_seed(5))
    m2 = sample_mask(eligible, (8, 8), config, torch.Generator().manual_seed(5))
    m3 = sample_mask(eligible, (8, 8), config, torch.Generator().manual_seed(6))
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)


def test_authors_ndvi_uses_model_input_bands():
    x = torch.rand(1, 2, 5, 3, 3)
    ndvi = ndvi_from_input(x, red_index=1, nir_index=3)
    expected = (x[:, :, 3] - x[:, :, 1]) / (x[:, :, 1] + x[:, :, 3] + 1e-20)
    torch.testing.assert_close(ndvi, expected)
    # raw-reflectance NDVI (dataset) says "bare soil" everywhere; authors' variant on input says vegetated
    raw_ndvi = torch.zeros(1, 2, 3, 3)
    veg = torch.zeros(1, 2, 5, 3, 3)
    veg[:, :, 3] = 1.0
    veg[:, :, 1] = 0.1
    gen = torch.Generator().manual_seed(0)
    ours = build_mask(veg, raw_ndvi, None, MaskingConfig(ratio=1.0), 1, 3, gen)
    theirs = build_mask(veg, raw_ndvi, None, MaskingConfig(ratio=1.0, authors_ndvi=True), 1, 3, gen)
    assert not ours.any() and theirs.all()


def test_bad_ratio_rejected():
    with pytest.raises(ValueError, match="mask ratio"):
        MaskingConfig(ratio=1.5)
