"""STA fusion: spatiotemporal attention between the two branches (docs/method.md §1.4).

For pixel i (f: temporal features, s: spatial features, both per date):

    z_i = gate * sum_j softmax_j(<concat_t Wq f_ti, concat_t Wk s_tj> * scale) Wv max_t f_tj
          + Wv max_t f_ti

The gate starts at zero, so at initialisation the head is the plain per-pixel path.
Under bf16 autocast the projections run in bf16; the logits (a dot product over T*D values) and
the softmax run in fp32.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class STAFusion(nn.Module):
    """HW x HW attention: queries from the temporal branch, keys from the spatial branch."""

    def __init__(self, d_model: int, scale_mode: str = "d_model", chunk: int = 0):
        super().__init__()
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.gate = nn.Parameter(torch.zeros(1))
        self.scale_mode = scale_mode
        self.chunk = chunk

    def forward(
        self, temporal: torch.Tensor, spatial: torch.Tensor, pad_mask: torch.Tensor | None = None,
        dropped: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, H, W, T, D) temporal and spatial features -> (B, H*W, D) fused features.

        ``pad_mask`` (B, T), True = padding: padded dates are left out of the query/key dot
        products and of the temporal max-pool. ``dropped`` (B, H, W, T), True = a (pixel, date)
        left out the same way for that pixel (invalid cells, ``use_valid_mask``).
        """
        B, H, W, T, D = temporal.shape
        pooled_in = temporal
        if pad_mask is not None or dropped is not None:
            pad = pad_mask[:, None, None, :, None] if pad_mask is not None else None  # (B, T) -> (B, 1, 1, T, 1)
            if dropped is not None:
                pad = dropped[..., None] if pad is None else pad | dropped[..., None]  # (B, H, W, T) -> (B, H, W, T, 1)
            temporal = temporal.masked_fill(pad, 0.0)
            spatial = spatial.masked_fill(pad, 0.0)
            pooled_in = temporal.masked_fill(pad, float("-inf"))
        query = self.query(temporal).reshape(B, 1, H * W, T * D)  # (B, H, W, T, D) -> (B, 1, HW, T*D)
        key = self.key(spatial).reshape(B, 1, H * W, T * D)  # (B, H, W, T, D) -> (B, 1, HW, T*D)
        value = self.value(pooled_in.amax(dim=3)).reshape(B, 1, H * W, D)  # (B, H, W, D) -> (B, 1, HW, D)
        with torch.autocast(device_type=query.device.type, enabled=False):  # logits and softmax in fp32
            query, key, value = query.float(), key.float(), value.float()  # no-ops in fp32
            query = query * self._scale(B, T, D, pad_mask, query).view(B, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)
            context = torch.cat(
                [
                    F.scaled_dot_product_attention(q, key, value, scale=1.0)
                    for q in query.split(self.chunk or H * W, dim=2)
                ],
                dim=2,
            )
            return (self.gate * context + value).view(B, H * W, D)  # (B, 1, HW, D) -> (B, HW, D)

    def _scale(self, B: int, T: int, D: int, pad_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """(B,) softmax temperature: 1/sqrt(D) (paper) or 1/sqrt(D * T_valid)."""
        if self.scale_mode == "d_model":
            return like.new_full((B,), 1.0 / math.sqrt(D))
        t_valid = like.new_full((B,), float(T)) if pad_mask is None else (~pad_mask).sum(1).to(like.dtype)
        return torch.rsqrt(t_valid * D)
