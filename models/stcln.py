"""STCLN backbone: per-date CNN (spatial branch) + per-pixel Transformer (temporal branch).

With ``config.extra_sources`` (e.g. Sentinel-1 next to Sentinel-2) every further source gets its
own encoder (docs/model.md, "Several sources"): a whole STCLN backbone on its own dates
(``fusion="late"``), or its own CNN and GroupNorm feeding the primary's Transformer with one joint
sequence of all frames (``fusion="merged"``). Without extra sources the module, its state-dict keys
and its outputs are the paper's.
"""

from contextlib import contextmanager, nullcontext
from dataclasses import replace

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
        if config.extra_sources:
            if config.fusion == "late":  # a whole single-source backbone per extra source
                single = dict(extra_sources=(), extra_channels=(), use_valid_mask=False)  # radar has no validity
                self.extra = nn.ModuleDict(
                    {name: STCLN(replace(config, in_channels=bands, **single)) for name, bands in zip(config.extra_sources, config.extra_channels)}
                )
            else:  # "merged": own CNN and input GroupNorm per source, the primary's Transformer for all
                self.extra = nn.ModuleDict(
                    {name: MergedSource(bands, config.widths, config.n_heads) for name, bands in zip(config.extra_sources, config.extra_channels)}
                )
                self.source_embedding = nn.Parameter(torch.zeros(1 + len(config.extra_sources), config.d_model))
                nn.init.trunc_normal_(self.source_embedding, std=0.02)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the CNN and of every Transformer layer (``--grad_checkpoint``).

        Their activations are recomputed during backward instead of being kept: less memory, about
        one more forward pass of time, the same outputs, gradients and BatchNorm statistics. A
        runtime option, not part of :class:`STCLNConfig`: it never changes what the model computes.
        """
        self.grad_checkpoint = enable
        self.temporal.grad_checkpoint = enable
        for encoder in self.late_encoders():
            encoder.set_grad_checkpointing(enable)

    def set_fast_dropout(self, enable: bool = True) -> None:
        """Dropout masks from 16-bit slices of 64-bit random words (``--fast_dropout``, models/temporal.py).

        A runtime option for CPU training: same keep probability up to 1.5e-5 and the same model,
        a different random stream from the default ``nn.Dropout`` (paper). Evaluation is unchanged.
        """
        for layer in self.temporal.layers:
            layer.fast_dropout = enable
        for encoder in self.late_encoders():
            encoder.set_fast_dropout(enable)

    def late_encoders(self) -> list["STCLN"]:
        """The per-source backbones of ``fusion="late"`` (empty otherwise)."""
        if not self.config.extra_sources or self.config.fusion != "late":
            return []
        return list(self.extra.values())

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, pad_mask: torch.Tensor | None = None,
        valid: torch.Tensor | None = None, extra: dict | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encode a batch of image time series.

        Args:
            x: (B, T, C, H, W) input series of the primary source.
            positions: (B, T) date indices or days (see ``config.positions``).
            pad_mask: (B, T) bool, True = padded step. Used only if ``config.use_pad_mask``.
            valid: (B, T, H, W) bool, True = clear observation. Used only if ``config.use_valid_mask``.
            extra: ``{source: (x_s (B, T_s, C_s, H, W), positions_s (B, T_s), pad_mask_s (B, T_s))}``
                for every name of ``config.extra_sources`` (None or empty without extra sources).

        Returns:
            ``temporal``: (B, H, W, T, D) temporal-branch features;
            ``spatial``: (B, H, W, T, D) spatial-branch (CNN) features;
            ``pad_mask``: the mask the model honoured, or None;
            ``dropped``: (B, H, W, T) bool, the (pixel, date) pairs left out per pixel (invalid
            cells; a pixel without any valid date keeps all its dates, whose inputs are zero), or None.
            With ``fusion="late"`` also ``extra``: {source: these four entries for that source};
            with ``fusion="merged"`` the four entries cover the joint sequence (T = T + sum T_s:
            the primary's dates, then each extra source's in ``config.extra_sources`` order) and
            ``split`` gives the per-source lengths (T, T_s, ...).
        """
        check_extra(self.config, extra)
        if self.config.extra_sources and self.config.fusion == "merged":
            return self.forward_merged(x, positions, pad_mask, valid, extra)
        out = self.forward_single(x, positions, pad_mask, valid)
        if self.config.extra_sources:
            out["extra"] = {name: self.extra[name](*extra[name]) for name in self.config.extra_sources}
        return out

    def forward_single(
        self, x: torch.Tensor, positions: torch.Tensor, pad_mask: torch.Tensor | None, valid: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """The paper's backbone on the primary source (see :meth:`forward`)."""
        B, T, C, H, W = x.shape
        pad_mask = pad_mask if self.config.use_pad_mask else None
        x, dropped, keys = self.validity(x, pad_mask, valid)
        frames = self.encode_frames(x, pad_mask)  # (B, T, D, H, W)
        sequences = frames.permute(0, 3, 4, 1, 2).reshape(B, H * W, T, -1)  # (B, T, D, H, W) -> (B, HW, T, D), one copy
        spatial = sequences.view(B, H, W, T, -1)  # (B, HW, T, D) -> (B, H, W, T, D), contiguous for the STA keys
        temporal = self.temporal(sequences, positions, pad_mask, keys)
        temporal = temporal.view(B, H, W, T, -1)  # (B, HW, T, D) -> (B, H, W, T, D)
        return {"temporal": temporal, "spatial": spatial, "pad_mask": pad_mask, "dropped": dropped}

    def validity(self, x: torch.Tensor, pad_mask: torch.Tensor | None, valid: torch.Tensor | None):
        """(input with invalid cells zeroed, dropped (B, H, W, T) or None, attention keys (B, HW, T) or None)."""
        if not (self.config.use_valid_mask and valid is not None):
            return x, None, None
        B, T, C, H, W = x.shape
        x = x.masked_fill(~valid[:, :, None], 0.0)  # invalid cells enter nowhere: zero (the normalised mean)
        real = valid.new_ones(B, 1, 1, T) if pad_mask is None else ~pad_mask[:, None, None, :]  # (B, T) -> (B, 1, 1, T)
        keep = valid.permute(0, 2, 3, 1) & real  # (B, T, H, W) -> (B, H, W, T)
        keep = torch.where(keep.any(dim=-1, keepdim=True), keep, real)  # no valid date: every real date (zero inputs)
        dropped = real & ~keep  # (B, H, W, T): left out per pixel, padding aside
        keys = keep.reshape(B, H * W, T)  # (B, H, W, T) -> (B, HW, T)
        return x, dropped, keys

    def forward_merged(
        self, x: torch.Tensor, positions: torch.Tensor, pad_mask: torch.Tensor | None, valid: torch.Tensor | None,
        extra: dict,
    ) -> dict[str, torch.Tensor]:
        """``fusion="merged"``: every source's frames through its own CNN and input GroupNorm, its own
        days as positions plus its source embedding, then ONE Transformer over the joint sequence."""
        B, T, C, H, W = x.shape
        use_pad = self.config.use_pad_mask
        pad_mask = pad_mask if use_pad else None
        x, dropped, keys = self.validity(x, pad_mask, valid)
        frames = self.encode_frames(x, pad_mask)  # (B, T, D, H, W)
        sequences = [frames.permute(0, 3, 4, 1, 2).reshape(B, H * W, T, -1)]  # (B, T, D, H, W) -> (B, HW, T, D)
        embedded = [self.temporal.embed(sequences[0], positions, self.temporal.in_norm, pad_mask, keys)
                    + self.source_embedding[0]]
        pads, key_parts, dropped_parts = [pad_mask], [keys], [dropped]
        for index, name in enumerate(self.config.extra_sources, 1):
            x_s, positions_s, pad_s = extra[name]
            T_s = x_s.shape[1]
            pad_s = pad_s if use_pad else None
            frames_s = self.encode_frames(x_s, pad_s, self.extra[name].spatial)  # (B, T_s, D, H, W)
            sequences.append(frames_s.permute(0, 3, 4, 1, 2).reshape(B, H * W, T_s, -1))  # (B, T_s, D, H, W) -> (B, HW, T_s, D)
            embedded.append(self.temporal.embed(sequences[-1], positions_s, self.extra[name].in_norm, pad_s)
                            + self.source_embedding[index])
            pads.append(pad_s)
            real_s = torch.ones(B, T_s, dtype=torch.bool, device=x.device) if pad_s is None else ~pad_s
            key_parts.append(real_s[:, None].expand(B, H * W, T_s))  # (B, T_s) -> (B, HW, T_s): radar is always valid
            dropped_parts.append(torch.zeros(B, H, W, T_s, dtype=torch.bool, device=x.device))
        joint_pad = torch.cat(pads, dim=1) if use_pad else None  # (B, T + sum T_s)
        joint_keys = torch.cat(key_parts, dim=2) if keys is not None else None  # (B, HW, T + sum T_s)
        temporal = self.temporal.encode(torch.cat(embedded, dim=2), joint_pad, joint_keys)  # (B, HW, T_all, D)
        spatial = torch.cat(sequences, dim=2)  # (B, HW, T_all, D)
        T_all = spatial.shape[2]
        return {
            "temporal": temporal.view(B, H, W, T_all, -1),  # (B, HW, T_all, D) -> (B, H, W, T_all, D)
            "spatial": spatial.view(B, H, W, T_all, -1),  # (B, HW, T_all, D) -> (B, H, W, T_all, D)
            "pad_mask": joint_pad,
            "dropped": torch.cat(dropped_parts, dim=3) if dropped is not None else None,  # (B, H, W, T_all)
            "split": tuple(sequence.shape[2] for sequence in sequences),
        }

    def encode_frames(self, x: torch.Tensor, pad_mask: torch.Tensor | None, spatial: nn.Module | None = None) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T, D, H, W) through ``spatial`` (default: this backbone's CNN);
        padded frames are skipped (left at zero)."""
        B, T, C, H, W = x.shape
        if pad_mask is None:
            return self.run_cnn(x.reshape(B * T, C, H, W), spatial).view(B, T, -1, H, W)  # fold T into the batch
        valid = ~pad_mask
        features = self.run_cnn(x[valid], spatial)  # (N_valid, C, H, W) -> (N_valid, D, H, W)
        out = features.new_zeros(B, T, *features.shape[1:])  # the features' dtype (bf16 under autocast)
        out[valid] = features
        return out

    def run_cnn(self, frames: torch.Tensor, spatial: nn.Module | None = None) -> torch.Tensor:
        """(N, C, H, W) -> (N, D, H, W), checkpointed when ``grad_checkpoint`` is on."""
        spatial = self.spatial if spatial is None else spatial
        if not (self.grad_checkpoint and torch.is_grad_enabled()):
            return spatial(frames)
        return checkpoint(spatial, frames, use_reentrant=False,
                          context_fn=lambda: (nullcontext(), frozen_batchnorm_stats(spatial)))


class MergedSource(nn.Module):
    """What an extra source owns under ``fusion="merged"``: its per-date CNN and the GroupNorm of its
    features over its own dates (radar and optical features differ in scale) before the joint Transformer."""

    def __init__(self, in_channels: int, widths: tuple[int, int], n_heads: int):
        super().__init__()
        self.spatial = SpatialEncoder(in_channels, widths)
        self.in_norm = nn.GroupNorm(n_heads, widths[-1])


def check_extra(config: STCLNConfig, extra: dict | None) -> None:
    """The extra sources given must be exactly ``config.extra_sources`` (a model never ignores an input)."""
    given = tuple(extra or ())
    if set(given) != set(config.extra_sources):
        raise ValueError(f"the model was built for extra sources {list(config.extra_sources)}, "
                         f"the batch brings {list(given)}")


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
