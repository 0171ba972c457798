"""STCLN backbone: per-date CNN (spatial branch) + per-pixel Transformer (temporal branch)."""

from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import STCLNConfig
from .spatial import SpatialEncoder
from .temporal import TemporalEncoder


class STCLN(nn.Module):
    """The backbone shared by pre-training and fine-tuning (the authors' ``utae`` submodule)."""

    def __init__(self, config: STCLNConfig):
        super().__init__()
        self.config = config
        self.spatial = SpatialEncoder(config.in_channels, config.widths)
        self.temporal = TemporalEncoder(
            config.d_model, config.n_heads, config.n_layers, config.d_ffn, config.dropout, config.pe_period
        )
        self.grad_checkpoint = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the CNN and of every Transformer layer (``--grad_checkpoint``).

        Their activations are recomputed during backward instead of being kept: less memory, about
        one more forward pass of time, the same outputs, gradients and BatchNorm statistics. A
        runtime option, not part of :class:`STCLNConfig`: it never changes what the model computes.
        """
        self.grad_checkpoint = enable
        self.temporal.grad_checkpoint = enable

    def set_fast_dropout(self, enable: bool = True) -> None:
        """Dropout masks from 16-bit slices of 64-bit random words (``--fast_dropout``, models/temporal.py).

        A runtime option for CPU training: same keep probability up to 1.5e-5 and the same model,
        a different random stream from the default ``nn.Dropout`` (paper). Evaluation is unchanged.
        """
        for layer in self.temporal.layers:
            layer.fast_dropout = enable

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, pad_mask: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encode a batch of image time series.

        Args:
            x: (B, T, C, H, W) input series.
            positions: (B, T) date indices or days (see ``config.positions``).
            pad_mask: (B, T) bool, True = padded step. Used only if ``config.use_pad_mask``.
            valid: (B, T, H, W) bool, True = clear observation. Used only if ``config.use_valid_mask``.

        Returns:
            ``temporal``: (B, H, W, T, D) temporal-branch features;
            ``spatial``: (B, H, W, T, D) spatial-branch (CNN) features;
            ``pad_mask``: the mask the model honoured, or None;
            ``dropped``: (B, H, W, T) bool, the (pixel, date) pairs left out per pixel (invalid
            cells; a pixel without any valid date keeps all its dates, whose inputs are zero), or None.
        """
        B, T, C, H, W = x.shape
        pad_mask = pad_mask if self.config.use_pad_mask else None
        dropped = keys = None
        if self.config.use_valid_mask and valid is not None:
            x = x.masked_fill(~valid[:, :, None], 0.0)  # invalid cells enter nowhere: zero (the normalised mean)
            real = valid.new_ones(B, 1, 1, T) if pad_mask is None else ~pad_mask[:, None, None, :]  # (B, T) -> (B, 1, 1, T)
            keep = valid.permute(0, 2, 3, 1) & real  # (B, T, H, W) -> (B, H, W, T)
            keep = torch.where(keep.any(dim=-1, keepdim=True), keep, real)  # no valid date: every real date (zero inputs)
            dropped = real & ~keep  # (B, H, W, T): left out per pixel, padding aside
            keys = keep.reshape(B, H * W, T)  # (B, H, W, T) -> (B, HW, T)
        frames = self.encode_frames(x, pad_mask)  # (B, T, D, H, W)
        sequences = frames.permute(0, 3, 4, 1, 2).reshape(B, H * W, T, -1)  # (B, T, D, H, W) -> (B, HW, T, D), one copy
        spatial = sequences.view(B, H, W, T, -1)  # (B, HW, T, D) -> (B, H, W, T, D), contiguous for the STA keys
        temporal = self.temporal(sequences, positions, pad_mask, keys)
        temporal = temporal.view(B, H, W, T, -1)  # (B, HW, T, D) -> (B, H, W, T, D)
        return {"temporal": temporal, "spatial": spatial, "pad_mask": pad_mask, "dropped": dropped}

    def encode_frames(self, x: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T, D, H, W); padded frames are skipped (left at zero)."""
        B, T, C, H, W = x.shape
        if pad_mask is None:
            return self.run_cnn(x.reshape(B * T, C, H, W)).view(B, T, -1, H, W)  # fold T into the batch
        valid = ~pad_mask
        features = self.run_cnn(x[valid])  # (N_valid, C, H, W) -> (N_valid, D, H, W)
        out = features.new_zeros(B, T, *features.shape[1:])  # the features' dtype (bf16 under autocast)
        out[valid] = features
        return out

    def run_cnn(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, D, H, W), checkpointed when ``grad_checkpoint`` is on."""
        if not (self.grad_checkpoint and torch.is_grad_enabled()):
            return self.spatial(frames)
        return checkpoint(self.spatial, frames, use_reentrant=False,
                          context_fn=lambda: (nullcontext(), frozen_batchnorm_stats(self.spatial)))


@contextmanager
def frozen_batchnorm_stats(module: nn.Module):
    """Restore every BatchNorm buffer on exit: the recomputation in backward must not count a batch twice."""
    buffers = [b for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for b in m.buffers()]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)
