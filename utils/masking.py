"""Spatiotemporal masking for pre-training (docs/method.md §2.2-2.3).

A cell is one (sample, date, pixel). Cells are masked independently with probability
``ratio`` (all bands together), but only on *eligible* frames: frames where more than
``min_fraction`` of the pixels are vegetated (NDVI > ``ndvi_threshold``). Padded frames are
never eligible.

Three modes, each masking a cell of an eligible frame with probability ``ratio``:

- ``cell`` (the paper): every cell independently. At ratio 0.4 a masked cell keeps ~60% of its
  same-date 3x3 neighbours visible, so same-date spatial in-painting solves much of the pretext.
- ``block`` (an option): k x k spatial blocks of a date (``block`` = k) are masked together, on
  a block grid shifted by a random offset per frame; edge blocks are clipped, so H, W need not be
  multiples of k. Each cell still has probability ``ratio``, but most same-date neighbours of a
  masked cell are hidden too, which pushes the model towards the other dates.
- ``frame`` (the temporal-only ablation): whole dates.

With per-cell validity (cloud masks of a folder data set, ``valid``), an invalid cell is never a
reconstruction target: the drawn mask is cut to valid cells, and the gate's vegetated fraction
is taken over the valid pixels of a frame (a frame without any is not eligible). Data without
validity behave as before. The authors compute NDVI on the model input (z-scored bands for PASTIS); we use
raw reflectance by default (the dataset's ``ndvi``) and keep ``authors_ndvi`` to reproduce theirs.

Several sources (docs/method.md §2.5): every source is masked on its own grid of dates with the same
mode and ratio (:func:`build_source_mask`); the NDVI gate is an optical notion and applies to the
optical primary only: radar frames (no clouds, no NDVI) are all eligible, padding aside.
"""

from dataclasses import dataclass

import torch

MASK_MODES = ("cell", "block", "frame")
NDVI_EPS = 1e-20  # the authors' denominator guard


@dataclass
class MaskingConfig:
    """Masking hyper-parameters (paper: ratio 0.4, NDVI 0.2, 90% of pixels)."""

    ratio: float = 0.4
    mode: str = "cell"
    ndvi_threshold: float = 0.2
    min_fraction: float = 0.9
    authors_ndvi: bool = False
    block: int = 4
    ndvi_gate: bool = True  # False when the data has no red/NIR bands: every valid date may be masked

    def __post_init__(self):
        if not 0.0 < self.ratio <= 1.0:  # 0 would mask nothing: a zero loss, nothing learnt
            raise ValueError(f"mask ratio must be in (0, 1], got {self.ratio}")
        if not -1.0 <= self.ndvi_threshold < 1.0:  # NDVI lies in [-1, 1]; NaN fails too
            raise ValueError(f"NDVI threshold must be in [-1, 1), got {self.ndvi_threshold}")
        if not 0.0 <= self.min_fraction < 1.0:
            raise ValueError(f"vegetated fraction must be in [0, 1), got {self.min_fraction}")
        if not isinstance(self.authors_ndvi, bool) or not isinstance(self.ndvi_gate, bool):
            raise ValueError(
                f"authors_ndvi and ndvi_gate must be booleans, got {self.authors_ndvi!r}, {self.ndvi_gate!r}"
            )
        if self.authors_ndvi and not self.ndvi_gate:
            raise ValueError("authors_ndvi needs the NDVI gate (it only changes how the gate's NDVI is computed)")
        if self.mode not in MASK_MODES:
            raise ValueError(f"mask mode must be one of {MASK_MODES}, got {self.mode!r}")
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"mask block size must be an integer >= 1, got {self.block!r}")


def ndvi_from_input(x: torch.Tensor, red_index: int, nir_index: int) -> torch.Tensor:
    """The authors' NDVI on whatever the model sees: (B, T, C, H, W) -> (B, T, H, W)."""
    red, nir = x[:, :, red_index], x[:, :, nir_index]
    return (nir - red) / (red + nir + NDVI_EPS)


def eligible_frames(
    ndvi: torch.Tensor, pad_mask: torch.Tensor | None, config: MaskingConfig, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, T, H, W) NDVI -> (B, T) bool: frames that may be masked. With ``valid`` (B, T, H, W) the
    vegetated fraction counts valid pixels only, and a frame without a valid pixel is not eligible."""
    if not config.ndvi_gate:
        eligible = torch.ones(ndvi.shape[:2], dtype=torch.bool, device=ndvi.device)
        if valid is not None:
            eligible = valid.flatten(2).any(dim=2)  # (B, T, H*W) -> (B, T)
        return eligible & ~pad_mask if pad_mask is not None else eligible
    vegetated = ndvi > config.ndvi_threshold
    if valid is None:
        fraction = vegetated.float().mean(dim=(2, 3))
    else:
        count = valid.sum(dim=(2, 3))
        fraction = (vegetated & valid).sum(dim=(2, 3)).float() / count.clamp_min(1)
        fraction = fraction.masked_fill(count == 0, 0.0)
    eligible = fraction > config.min_fraction
    if pad_mask is not None:
        eligible &= ~pad_mask
    return eligible


def sample_mask(
    eligible: torch.Tensor, size: tuple[int, int], config: MaskingConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw the boolean mask (B, T, H, W), True = masked, restricted to eligible frames.

    ``cell`` masks (date, pixel) cells independently (the paper's spatiotemporal masking);
    ``block`` masks k x k blocks of a date (see the module docstring); ``frame`` masks whole
    dates (the temporal-only ablation). In every mode P(cell masked) = ``ratio`` on eligible frames.
    """
    B, T = eligible.shape
    H, W = size
    device = eligible.device if generator is None else generator.device
    if config.mode == "cell":
        draws = torch.rand(B, T, H, W, generator=generator, device=device)
    elif config.mode == "block":
        draws = block_draws(B, T, H, W, config.block, generator, device)
    else:
        draws = torch.rand(B, T, 1, 1, generator=generator, device=device).expand(B, T, H, W)
    return (draws < config.ratio).to(eligible.device) & eligible[:, :, None, None]


def block_draws(B: int, T: int, H: int, W: int, k: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """One uniform draw per k x k block, broadcast to its cells: (B, T, H, W).

    The block grid of each frame is shifted by a random offset in [0, k) along each axis, so block
    edges do not sit at fixed pixels; blocks cut by the image border are simply smaller.
    """
    rows, cols = (H + k - 1) // k + 1, (W + k - 1) // k + 1  # one extra block absorbs the offset
    uniform = torch.rand(B, T, rows, cols, generator=generator, device=device)
    offset = torch.randint(0, k, (B, T, 2), generator=generator, device=device)
    block_row = (torch.arange(H, device=device) + offset[..., :1]) // k  # (B, T, H)
    block_col = (torch.arange(W, device=device) + offset[..., 1:]) // k  # (B, T, W)
    flat = block_row[..., :, None] * cols + block_col[..., None, :]  # (B, T, H, W) block index
    return uniform.flatten(2).gather(2, flat.flatten(2)).view(B, T, H, W)  # (B, T, rows*cols) -> (B, T, H, W)


def build_mask(
    batch_image: torch.Tensor,
    batch_ndvi: torch.Tensor,
    pad_mask: torch.Tensor | None,
    config: MaskingConfig,
    red_index: int,
    nir_index: int,
    generator: torch.Generator | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eligibility + draw for one batch: (B, T, C, H, W) image -> (B, T, H, W) bool mask of the
    reconstruction targets; with ``valid`` (B, T, H, W) never an invalid cell."""
    ndvi = ndvi_from_input(batch_image, red_index, nir_index) if config.authors_ndvi else batch_ndvi
    eligible = eligible_frames(ndvi, pad_mask, config, valid)
    mask = sample_mask(eligible, tuple(batch_image.shape[-2:]), config, generator)
    return mask if valid is None else mask & valid


def build_source_mask(
    image: torch.Tensor,
    pad_mask: torch.Tensor | None,
    config: MaskingConfig,
    generator: torch.Generator | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mask of a source without NDVI gate (radar, or a primary without ``ndvi``): (B, T, C, H, W)
    image -> (B, T, H, W) bool; every non-padded frame is eligible (with ``valid``: those with a
    valid pixel, and never an invalid cell), drawn in ``config.mode`` at ``config.ratio``."""
    B, T = image.shape[:2]
    eligible = torch.ones(B, T, dtype=torch.bool, device=image.device)
    if valid is not None:
        eligible = valid.flatten(2).any(dim=2)  # (B, T, H*W) -> (B, T)
    if pad_mask is not None:
        eligible = eligible & ~pad_mask
    mask = sample_mask(eligible, tuple(image.shape[-2:]), config, generator)
    return mask if valid is None else mask & valid
