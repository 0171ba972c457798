"""STCLN backbone: per-date CNN (spatial branch) + per-pixel Transformer (temporal branch)."""

import torch
from torch import nn

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

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, pad_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Encode a batch of image time series.

        Args:
            x: (B, T, C, H, W) input series.
            positions: (B, T) date indices or days (see ``config.positions``).
            pad_mask: (B, T) bool, True = padded step. Used only if ``config.use_pad_mask``.

        Returns:
            ``temporal``: (B, H, W, T, D) temporal-branch features;
            ``spatial``: (B, H, W, T, D) spatial-branch (CNN) features;
            ``pad_mask``: the mask the model honoured, or None.
        """
        B, T, C, H, W = x.shape
        pad_mask = pad_mask if self.config.use_pad_mask else None
        spatial = self.encode_frames(x, pad_mask)  # (B, T, D, H, W)
        spatial = spatial.permute(0, 3, 4, 1, 2)  # (B, T, D, H, W) -> (B, H, W, T, D)
        sequences = spatial.reshape(B, H * W, T, -1)  # (B, H, W, T, D) -> (B, HW, T, D)
        temporal = self.temporal(sequences, positions, pad_mask)
        temporal = temporal.view(B, H, W, T, -1)  # (B, HW, T, D) -> (B, H, W, T, D)
        return {"temporal": temporal, "spatial": spatial, "pad_mask": pad_mask}

    def encode_frames(self, x: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T, D, H, W); padded frames are skipped (left at zero)."""
        B, T, C, H, W = x.shape
        if pad_mask is None:
            return self.spatial(x.reshape(B * T, C, H, W)).view(B, T, -1, H, W)  # fold T into the batch
        valid = ~pad_mask
        out = x.new_zeros(B, T, self.config.d_model, H, W)
        out[valid] = self.spatial(x[valid])  # (N_valid, C, H, W) -> (N_valid, D, H, W)
        return out
