"""pad_collate: padding, masks, positions, single samples and shape checks."""

import pytest
import torch

from utils.datasets.collate import pad_collate


def sample(length: int, channels: int = 3, size: int = 4, name: str = "x") -> dict:
    return {
        "image": torch.randn(length, channels, size, size),
        "ndvi": torch.rand(length, size, size),
        "days": torch.arange(1, length + 1, dtype=torch.int64) * 5,
        "label": torch.randint(0, 5, (size, size)),
        "id": name,
    }


def test_pads_time_and_marks_padding():
    samples = [sample(3, name="a"), sample(5, name="b"), sample(1, name="c")]
    batch = pad_collate(samples)
    assert batch["image"].shape == (3, 5, 3, 4, 4) and batch["ndvi"].shape == (3, 5, 4, 4)
    assert batch["days"].shape == (3, 5) and batch["label"].shape == (3, 4, 4)
    assert batch["pad_mask"].tolist() == [
        [False, False, False, True, True], [False] * 5, [False, True, True, True, True]]
    assert batch["positions"].tolist() == [list(range(5))] * 3
    assert batch["positions"].dtype == torch.int64 and batch["pad_mask"].dtype == torch.bool
    assert batch["id"] == ["a", "b", "c"]
    for row, item in enumerate(samples):
        length = item["image"].shape[0]
        assert torch.equal(batch["image"][row, :length], item["image"])
        assert torch.equal(batch["days"][row, :length], item["days"])
        assert batch["image"][row, length:].abs().sum() == 0 and batch["days"][row, length:].sum() == 0
        assert torch.equal(batch["label"][row], item["label"])


def test_single_sample():
    item = sample(4)
    batch = pad_collate([item])
    assert batch["image"].shape == (1, 4, 3, 4, 4) and not batch["pad_mask"].any()
    assert torch.equal(batch["image"][0], item["image"])


@pytest.mark.parametrize("other", [sample(3, channels=2), sample(3, size=5)])
def test_mismatched_shapes_raise(other):
    with pytest.raises(ValueError, match="differ"):
        pad_collate([sample(3), other])


def test_inconsistent_sample_raises():
    broken = sample(3)
    broken["days"] = broken["days"][:2]
    with pytest.raises(ValueError, match="days"):
        pad_collate([broken])
