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


def _same_date_neighbour_fraction(mask: torch.Tensor) -> float:
    """Fraction of the in-image 3x3 same-date neighbours of masked cells that are masked too (loop-free check)."""
    m = mask.float()
    B, T, H, W = m.shape
    padded = torch.nn.functional.pad(m, (1, 1, 1, 1))  # (B, T, H+2, W+2)
    inside = torch.nn.functional.pad(torch.ones_like(m), (1, 1, 1, 1))
    masked_neighbours = sum(padded[:, :, 1 + di:1 + di + H, 1 + dj:1 + dj + W]
                            for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0))
    neighbours = sum(inside[:, :, 1 + di:1 + di + H, 1 + dj:1 + dj + W]
                     for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0))
    return ((masked_neighbours * m).sum() / (neighbours * m).sum()).item()


@pytest.mark.parametrize("mode,size", [("cell", (30, 30)), ("block", (30, 30)), ("block", (13, 22)), ("frame", (6, 6))])
def test_expected_masked_fraction_is_the_ratio_in_every_mode(mode, size):
    eligible = torch.ones(40, 30, dtype=torch.bool)
    eligible[:, ::3] = False
    config = MaskingConfig(ratio=0.4, mode=mode, block=4)
    mask = sample_mask(eligible, size, config, torch.Generator().manual_seed(11))
    assert mask.shape == (40, 30, *size) and not mask[~eligible].any()
    fraction = mask[eligible].float().mean().item()
    # blocks/frames are the independent units: the standard error follows their count (<= 1 + ceil(size/4) a side)
    units = eligible.sum().item() * {"cell": size[0] * size[1], "block": 1, "frame": 1}[mode]
    if mode == "block":
        units *= (size[0] // 4) * (size[1] // 4)  # fewer than the real number of (partly clipped) blocks
    assert abs(fraction - 0.4) < 4 * (0.4 * 0.6 / units) ** 0.5


def test_block_mode_hides_same_date_neighbours_and_cell_mode_does_not():
    eligible = torch.ones(8, 10, dtype=torch.bool)
    cell = sample_mask(eligible, (32, 32), MaskingConfig(ratio=0.4, mode="cell"), torch.Generator().manual_seed(2))
    block = sample_mask(eligible, (32, 32), MaskingConfig(ratio=0.4, mode="block", block=4), torch.Generator().manual_seed(2))
    # 4x4 blocks: on average 5.25 of 8 neighbours share the block, the rest is masked w.p. 0.4 -> ~0.79
    assert _same_date_neighbour_fraction(block) > 0.72
    assert abs(_same_date_neighbour_fraction(cell) - 0.4) < 0.03  # independent cells: the ratio itself
    # block 1 is the cell mode's distribution
    one = sample_mask(eligible, (32, 32), MaskingConfig(ratio=0.4, mode="block", block=1), torch.Generator().manual_seed(2))
    assert abs(_same_date_neighbour_fraction(one) - 0.4) < 0.03


def test_block_mode_masks_whole_blocks_with_random_offsets():
    eligible = torch.ones(4, 6, dtype=torch.bool)
    mask = sample_mask(eligible, (11, 9), MaskingConfig(ratio=0.5, mode="block", block=3), torch.Generator().manual_seed(4))
    offsets = set()
    for frame in mask.flatten(0, 1):
        # find the offset that makes the frame constant on every 3x3 block of the shifted grid
        fits = [(r, c) for r in range(3) for c in range(3)
                if all(len({bool(frame[i, j]) for i in range(11) for j in range(9)
                            if (i + r) // 3 == bi and (j + c) // 3 == bj}) <= 1
                       for bi in range(5) for bj in range(4))]
        assert fits, "a frame is not a union of 3x3 blocks for any offset"
        offsets.add(tuple(fits))
    assert len(offsets) > 1  # the grid moves between frames


def test_block_mode_is_deterministic_and_respects_padding():
    eligible = torch.tensor([[True, True, False, True]])
    pad = torch.tensor([[False, False, False, True]])
    ndvi = torch.full((1, 4, 10, 7), 0.8)
    image = torch.rand(1, 4, 3, 10, 7)
    config = MaskingConfig(ratio=0.6, mode="block", block=4)
    m1 = build_mask(image, ndvi, pad, config, 0, 1, torch.Generator().manual_seed(3))
    m2 = build_mask(image, ndvi, pad, config, 0, 1, torch.Generator().manual_seed(3))
    m3 = build_mask(image, ndvi, pad, config, 0, 1, torch.Generator().manual_seed(4))
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)
    assert not m1[0, 3].any()  # padded date
    gated = sample_mask(eligible, (10, 7), config, torch.Generator().manual_seed(3))
    assert not gated[0, 2].any()


@pytest.mark.parametrize("block", [0, -2, 2.5, True])
def test_bad_block_rejected(block):
    with pytest.raises(ValueError, match="block size"):
        MaskingConfig(mode="block", block=block)
