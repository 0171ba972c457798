"""Batching of variable-length series: pad time, return the padding mask and date positions."""

import torch

PAD_VALUE = 0  # utae-paps pads with 0; the pad_mask (not the value) marks padding here


def _pad_time(tensors: list[torch.Tensor], length: int) -> torch.Tensor:
    """Stack tensors of shape (T_i, ...) into (B, length, ...), zero-padding the end of time."""
    batch = tensors[0].new_full((len(tensors), length, *tensors[0].shape[1:]), PAD_VALUE)
    for row, tensor in enumerate(tensors):
        batch[row, : tensor.shape[0]] = tensor
    return batch


def pad_collate(samples: list[dict]) -> dict:
    """Collate CONTRACT.md samples into a batch, zero-padding T to the batch maximum.

    Returns:
        ``image`` (B, T, C, H, W), ``ndvi`` (B, T, H, W), ``days`` (B, T), ``positions`` (B, T)
        int64 = 0..T-1 for every sample (padded steps continue the count), ``pad_mask`` (B, T) bool
        (True where the step is padding), ``label`` (B, H, W), ``id`` list[str], and ``valid``
        (B, T, H, W) bool (padded steps False) when the samples carry per-cell validity.

    Raises:
        ValueError: empty list, or samples whose (C, H, W) or per-sample lengths disagree, or
        some with ``valid`` and some without.
    """
    if not samples:
        raise ValueError("pad_collate: no samples")
    ids = [sample["id"] for sample in samples]
    shapes = {tuple(sample["image"].shape[1:]) for sample in samples}
    label_shapes = {tuple(sample["label"].shape) for sample in samples}
    if len(shapes) != 1 or len(label_shapes) != 1:
        raise ValueError(f"pad_collate: samples {ids} differ in (C, H, W) {sorted(shapes)} "
                         f"or label (H, W) {sorted(label_shapes)}")
    for sample in samples:
        length = sample["image"].shape[0]
        if sample["ndvi"].shape[0] != length or sample["days"].shape[0] != length:
            raise ValueError(f"pad_collate: sample {sample['id']} has {length} images but "
                             f"{sample['ndvi'].shape[0]} ndvi and {sample['days'].shape[0]} days")
    with_valid = sum("valid" in sample for sample in samples)
    if with_valid not in (0, len(samples)):
        raise ValueError(f"pad_collate: samples {ids}: some carry 'valid' (cloud masks) and some not")
    lengths = torch.tensor([sample["image"].shape[0] for sample in samples], dtype=torch.int64)
    max_length = int(lengths.max())
    positions = torch.arange(max_length, dtype=torch.int64).expand(len(samples), max_length).clone()  # (B, T)
    extra = {"valid": _pad_time([sample["valid"] for sample in samples], max_length)} if with_valid else {}
    return extra | {
        "image": _pad_time([sample["image"] for sample in samples], max_length),
        "ndvi": _pad_time([sample["ndvi"] for sample in samples], max_length),
        "days": _pad_time([sample["days"] for sample in samples], max_length),
        "positions": positions,
        "pad_mask": positions >= lengths[:, None],
        "label": torch.stack([sample["label"] for sample in samples]),
        "id": ids,
    }
