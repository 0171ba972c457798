"""Temporal branch: a per-pixel Transformer over dates (docs/method.md §1.3).

The authors call it ``LTAE2d`` but it runs a stack of standard post-norm Transformer encoder
layers on every pixel's sequence. Attention goes through ``scaled_dot_product_attention`` so fused
kernels can be used (the reference asked for attention weights and could not).
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class SinusoidalPositions(nn.Module):
    """U-TAE's positional encoding: a d_head-dim sinusoid repeated n_heads times to fill d_model."""

    def __init__(self, d_model: int, n_heads: int, period: float):
        super().__init__()
        d_head = d_model // n_heads
        exponent = 2 * torch.div(torch.arange(d_head), 2, rounding_mode="floor") / d_head
        self.register_buffer("denom", torch.pow(period, exponent.float()), persistent=False)
        self.n_heads = n_heads

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """(B, T) positions (date index or day) -> (B, T, D) encodings."""
        angles = positions.float()[..., None] / self.denom  # (B, T, d_head)
        table = torch.empty_like(angles)
        table[..., 0::2] = torch.sin(angles[..., 0::2])
        table[..., 1::2] = torch.cos(angles[..., 1::2])
        return table.repeat(1, 1, self.n_heads)  # (B, T, d_head) -> (B, T, D)


class _MultiplyByMask(torch.autograd.Function):
    """out = x * mask, grad_x = grad * mask; ``mask`` holds 0 or 1 / (1 - p) in x's dtype."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout (training) whose masks are cut from 64-bit random words (``--fast_dropout``).

    ``nn.Dropout`` calls ``bernoulli_``, which draws one random number per element in a single
    thread on CPUs where PyTorch does not use MKL's generator (AMD). Here every 64-bit word of the
    default generator gives four 16-bit draws, and an element is kept when its draw is at least
    ``round(p * 2**16) - 2**15``: keep probability ``1 - round(p * 2**16) / 2**16`` (p = 0.1:
    0.899994 instead of 0.9). Same distribution up to that rounding, a different random stream:
    runs are reproducible from their seed but not bitwise equal to the default (paper) dropout.
    The mask is kept for backward in x's dtype (0 or 1 / (1 - p)): two same-dtype multiplications
    were faster on CPU than a select on a bool mask when measured, at one more byte per element
    in bf16. Under ``torch.compile`` it is ``F.dropout``: inductor generates its own parallel masks.
    """
    if p <= 0:
        return x
    if p >= 1:
        return x * 0
    if torch.compiler.is_compiling():
        return F.dropout(x, p, training=True)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
    draws = words.view(torch.int16)[:n].view(x.shape)  # (ceil(n/4),) int64 -> (4*ceil(n/4),) int16 -> x.shape
    keep = draws >= round(p * 2**16) - 2**15
    mask = keep.view(torch.uint8).to(x.dtype).mul_(1.0 / (1.0 - p))  # via uint8: a faster conversion than bool's
    return _MultiplyByMask.apply(x, mask)


def attention_fast_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None, p: float
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_head)) v with :func:`fast_dropout` on the attention weights.

    What ``scaled_dot_product_attention`` computes on CPU when it drops out attention weights (its
    math path); the softmax runs in fp32 under autocast. q, k, v: (N, nh, T, dh); ``attn_mask``
    (N, 1, 1, T) bool, True = may attend. Returns (N, nh, T, dh).
    """
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (N, nh, T, dh) @ (N, nh, dh, T) -> (N, nh, T, T)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = torch.softmax(scores.float(), dim=-1).to(v.dtype)
    return fast_dropout(weights, p) @ v  # (N, nh, T, T) @ (N, nh, T, dh) -> (N, nh, T, dh)


class TransformerLayer(nn.Module):
    """Post-norm encoder layer: x = LN(x + MHA(x)); x = LN(x + FFN(x)), dropout everywhere."""

    def __init__(self, d_model: int, n_heads: int, d_ffn: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.fast_dropout = False  # runtime option (STCLN.set_fast_dropout), not architecture

    def apply_dropout(self, x: torch.Tensor) -> torch.Tensor:
        """Training-time dropout: ``nn.Dropout`` (paper), or :func:`fast_dropout` with ``--fast_dropout``."""
        return fast_dropout(x, self.dropout) if self.fast_dropout and self.training else self.drop(x)

    def attention(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """(N, T, D) -> (N, T, D); ``attn_mask`` (N, 1, 1, T) bool, True = may attend."""
        N, T, D = x.shape
        q, k, v = self.qkv(x).view(N, T, 3, self.n_heads, D // self.n_heads).unbind(2)  # 3 x (N, T, nh, dh)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (N, T, nh, dh) -> (N, nh, T, dh)
        if self.fast_dropout and self.training and self.dropout > 0:
            out = attention_fast_dropout(q, k, v, attn_mask, self.dropout)
        else:
            dropout_p = self.dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        return self.proj(out.transpose(1, 2).reshape(N, T, D))  # (N, nh, T, dh) -> (N, T, D)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T, D) -> (N, T, D)."""
        x = self.norm1(x + self.apply_dropout(self.attention(x, attn_mask)))
        hidden = F.relu(self.linear1(x), inplace=True)  # in place: addmm keeps its inputs, not its output
        return self.norm2(x + self.apply_dropout(self.linear2(self.apply_dropout(hidden))))


def group_norm_over_time(x: torch.Tensor, norm: nn.GroupNorm, valid: torch.Tensor | None,
                         keys: torch.Tensor | None = None) -> torch.Tensor:
    """GroupNorm of every pixel sequence over (channels of a group) x (valid dates).

    Matches ``norm`` applied to the (N, D, T) layout as the reference does; with ``valid`` the
    statistics ignore padded dates, so padding cannot shift the features of real dates.

    Args:
        x: (B, L, T, D) features, L = pixels.
        norm: the GroupNorm holding groups, eps and the affine parameters.
        valid: (B, T) bool, True for real dates, or None (all real).
        keys: (B, L, T) bool, per pixel the dates that count (``use_valid_mask``), or None; it
            replaces ``valid`` (it already excludes padded dates).

    Returns (B, L, T, D) fp32 features whatever the input dtype.
    """
    B, L, T, D = x.shape
    groups = norm.num_groups
    x = x.float()  # statistics in fp32, also under bf16 autocast (a no-op in fp32)
    xg = x.view(B, L, T, groups, D // groups)  # (B, L, T, D) -> (B, L, T, G, D/G)
    if valid is None and keys is None:
        mean = xg.mean(dim=(2, 4), keepdim=True)
        var = xg.var(dim=(2, 4), keepdim=True, unbiased=False)
    else:
        if keys is not None:
            weight = keys.to(x.dtype).view(B, L, T, 1, 1)  # (B, L, T) -> (B, L, T, 1, 1)
        else:
            weight = valid.to(x.dtype).view(B, 1, T, 1, 1)  # (B, T) -> (B, 1, T, 1, 1)
        count = weight.sum(dim=2, keepdim=True) * (D // groups)
        mean = (xg * weight).sum(dim=(2, 4), keepdim=True) / count
        var = ((xg - mean).square() * weight).sum(dim=(2, 4), keepdim=True) / count
    xg = (xg - mean) * torch.rsqrt(var + norm.eps)
    return xg.view(B, L, T, D) * norm.weight + norm.bias  # (B, L, T, G, D/G) -> (B, L, T, D)


class TemporalEncoder(nn.Module):
    """GroupNorm + positional encoding + n_layers Transformer layers, for every pixel."""

    def __init__(self, d_model: int, n_heads: int, n_layers: int, d_ffn: int, dropout: float, pe_period: float):
        super().__init__()
        self.in_norm = nn.GroupNorm(n_heads, d_model)
        self.positional = SinusoidalPositions(d_model, n_heads, pe_period)
        self.layers = nn.ModuleList(TransformerLayer(d_model, n_heads, d_ffn, dropout) for _ in range(n_layers))
        self.grad_checkpoint = False  # runtime memory option (set_grad_checkpointing), not architecture

    def forward(self, x: torch.Tensor, positions: torch.Tensor, pad_mask: torch.Tensor | None = None,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, T, D) per-pixel sequences -> (B, L, T, D); ``pad_mask`` (B, T) True = padding;
        ``keys`` (B, L, T) True = a date this pixel attends to (``use_valid_mask``; excludes padding)."""
        x = self.embed(x, positions, self.in_norm, pad_mask, keys)
        return self.encode(x, pad_mask, keys)

    def embed(self, x: torch.Tensor, positions: torch.Tensor, norm: nn.GroupNorm, pad_mask: torch.Tensor | None = None,
              keys: torch.Tensor | None = None) -> torch.Tensor:
        """GroupNorm over time (``norm``: this encoder's ``in_norm``, or another source's) + positional
        encoding: (B, L, T, D) -> (B, L, T, D) fp32."""
        valid = None if pad_mask is None else ~pad_mask
        x = group_norm_over_time(x, norm, valid, keys)
        return x + self.positional(positions)[:, None]  # (B, T, D) -> (B, 1, T, D), broadcast over L

    def encode(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, keys: torch.Tensor | None = None) -> torch.Tensor:
        """The Transformer layers on embedded sequences: (B, L, T, D) -> (B, L, T, D); masks as in :meth:`forward`."""
        B, L, T, D = x.shape
        valid = None if pad_mask is None else ~pad_mask
        x = x.reshape(B * L, T, D)  # (B, L, T, D) -> (B*L, T, D)
        attn_mask = None
        if keys is not None:
            attn_mask = keys.reshape(B * L, 1, 1, T)  # (B, L, T) -> (B*L, 1, 1, T)
        elif valid is not None:
            attn_mask = valid[:, None, None, None, :].expand(B, L, 1, 1, T).reshape(B * L, 1, 1, T)  # (B, T) -> (B*L, 1, 1, T)
        for layer in self.layers:
            if self.grad_checkpoint and torch.is_grad_enabled():
                x = checkpoint(layer, x, attn_mask, use_reentrant=False)  # recomputed in backward, same RNG
            else:
                x = layer(x, attn_mask)
        return x.view(B, L, T, D)  # (B*L, T, D) -> (B, L, T, D)
