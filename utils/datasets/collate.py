"""Batching of variable-length series: pad time, return the padding mask and date positions."""

import torch

PAD_VALUE = 0  # utae-paps pads with 0; the pad_mask (not the value) marks padding here


def _pad_time(tensors: list[torch.Tensor], length: int) -> torch.Tensor:
    """Stack tensors of shape (T_i, ...) into (B, length, ...), zero-padding the end of time."""
    batch = tensors[0].new_full((len(tensors), length, *tensors[0].shape[1:]), PAD_VALUE)
    for row, tensor in enumerate(tensors):
        batch[row, : tensor.shape[0]] = tensor
    return batch


def _positions(lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions (B, T) int64 = 0..T-1 per row, pad_mask (B, T) bool True past each row's length), T = max length."""
    max_length = int(lengths.max())
    positions = torch.arange(max_length, dtype=torch.int64).expand(len(lengths), max_length).clone()  # (B, T)
    return positions, positions >= lengths[:, None]


def further_sources(samples: list[dict]) -> list[str]:
    """The further sources ``s`` of the samples (keys ``image_<s>``), in the first sample's order."""
    return [key.removeprefix("image_") for key in samples[0] if key.startswith("image_")]


def _collate_source(samples: list[dict], source: str, ids: list[str]) -> dict:
    """``image_<s>`` (B, T_s, C_s, H, W), ``days_<s>``, ``positions_<s>`` (B, T_s), ``pad_mask_<s>`` (B, T_s) bool."""
    image_key, days_key = f"image_{source}", f"days_{source}"
    if any(image_key not in sample or days_key not in sample for sample in samples):
        raise ValueError(f"pad_collate: samples {ids}: some lack {image_key} or {days_key}")
    shapes = {tuple(sample[image_key].shape[1:]) for sample in samples}
    if len(shapes) != 1:
        raise ValueError(f"pad_collate: samples {ids} differ in {image_key} (C, H, W) {sorted(shapes)}")
    for sample in samples:
        if sample[days_key].shape[0] != sample[image_key].shape[0]:
            raise ValueError(f"pad_collate: sample {sample['id']} has {sample[image_key].shape[0]} {image_key} "
                             f"frames but {sample[days_key].shape[0]} {days_key}")
    lengths = torch.tensor([sample[image_key].shape[0] for sample in samples], dtype=torch.int64)
    positions, pad_mask = _positions(lengths)
    max_length = positions.shape[1]
    return {
        image_key: _pad_time([sample[image_key] for sample in samples], max_length),
        days_key: _pad_time([sample[days_key] for sample in samples], max_length),
        f"positions_{source}": positions,
        f"pad_mask_{source}": pad_mask,
    }


def pad_collate(samples: list[dict]) -> dict:
    """Collate CONTRACT.md samples into a batch, zero-padding T to the batch maximum.

    Returns:
        ``image`` (B, T, C, H, W), ``ndvi`` (B, T, H, W) (absent when the samples have none: a radar
        primary source), ``days`` (B, T), ``positions`` (B, T)
        int64 = 0..T-1 for every sample (padded steps continue the count), ``pad_mask`` (B, T) bool
        (True where the step is padding), ``label`` (B, H, W), ``id`` list[str], and ``valid``
        (B, T, H, W) bool (padded steps False) when the samples carry per-cell validity. Every further
        source ``s`` (sample keys ``image_<s>``, ``days_<s>``) is padded on its own to the batch's
        longest T_s: ``image_<s>`` (B, T_s, C_s, H, W), ``days_<s>``, ``positions_<s>`` and
        ``pad_mask_<s>`` (B, T_s), same rules as the primary's.

    Raises:
        ValueError: empty list, or samples whose (C, H, W) or per-sample lengths disagree, or
        some with ``valid`` (or ``ndvi``, or a further source) and some without.
    """
    if not samples:
        raise ValueError("pad_collate: no samples")
    ids = [sample["id"] for sample in samples]
    shapes = {tuple(sample["image"].shape[1:]) for sample in samples}
    label_shapes = {tuple(sample["label"].shape) for sample in samples}
    if len(shapes) != 1 or len(label_shapes) != 1:
        raise ValueError(f"pad_collate: samples {ids} differ in (C, H, W) {sorted(shapes)} "
                         f"or label (H, W) {sorted(label_shapes)}")
    with_ndvi = sum("ndvi" in sample for sample in samples)
    if with_ndvi not in (0, len(samples)):
        raise ValueError(f"pad_collate: samples {ids}: some carry 'ndvi' and some not")
    for sample in samples:
        length = sample["image"].shape[0]
        ndvi_length = sample["ndvi"].shape[0] if with_ndvi else length
        if ndvi_length != length or sample["days"].shape[0] != length:
            raise ValueError(f"pad_collate: sample {sample['id']} has {length} images but "
                             f"{ndvi_length} ndvi and {sample['days'].shape[0]} days")
    with_valid = sum("valid" in sample for sample in samples)
    if with_valid not in (0, len(samples)):
        raise ValueError(f"pad_collate: samples {ids}: some carry 'valid' (cloud masks) and some not")
    lengths = torch.tensor([sample["image"].shape[0] for sample in samples], dtype=torch.int64)
    positions, pad_mask = _positions(lengths)
    max_length = positions.shape[1]
    extra = {"valid": _pad_time([sample["valid"] for sample in samples], max_length)} if with_valid else {}
    image = {"image": _pad_time([sample["image"] for sample in samples], max_length)}
    if with_ndvi:
        image["ndvi"] = _pad_time([sample["ndvi"] for sample in samples], max_length)
    batch = extra | image | {
        "days": _pad_time([sample["days"] for sample in samples], max_length),
        "positions": positions,
        "pad_mask": pad_mask,
        "label": torch.stack([sample["label"] for sample in samples]),
        "id": ids,
    }
    sources = further_sources(samples)
    other = {tuple(key for key in sample if key.startswith("image_")) for sample in samples}
    if len(other) != 1:
        raise ValueError(f"pad_collate: samples {ids} carry different further sources {sorted(other)}")
    for source in sources:
        batch |= _collate_source(samples, source, ids)
    return batch
