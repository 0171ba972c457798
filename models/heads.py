"""Task wrappers around the backbone: masked reconstruction and segmentation."""

import torch
from torch import nn

from .config import STCLNConfig
from .sta import STAFusion
from .stcln import STCLN


class STCLNSegmenter(nn.Module):
    """STCLN + STA fusion + per-pixel linear classifier (the authors' ``UTAEClassification``)."""

    def __init__(self, config: STCLNConfig):
        super().__init__()
        self.config = config
        self.backbone = STCLN(config)
        self.sta = STAFusion(config.d_model, config.sta_scale, config.sta_chunk)
        self.classifier = nn.Linear(config.d_model, config.num_classes)
        self.backbone_frozen = False

    def freeze_backbone(self) -> None:
        """Linear probing: no gradient to the backbone, and its BatchNorm statistics stay fixed."""
        self.backbone.requires_grad_(False)
        self.backbone_frozen = True
        self.train(self.training)

    def train(self, mode: bool = True) -> "STCLNSegmenter":
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, C, H, W) series, (B, T) positions -> (B, K, H, W) logits; ``valid`` (B, T, H, W)
        per-cell validity, honoured with ``config.use_valid_mask``."""
        B, T, C, H, W = x.shape
        features = self.backbone(x, positions, pad_mask, valid)
        fused = self.sta(
            features["temporal"], features["spatial"], features["pad_mask"], features["dropped"]
        )  # (B, HW, D)
        logits = self.classifier(fused)  # (B, HW, K)
        return logits.transpose(1, 2).reshape(B, -1, H, W)  # (B, HW, K) -> (B, K, H, W)


class STCLNPretrain(nn.Module):
    """STCLN + mask token + linear reconstruction of every band (the authors' ``UTAEPrediction``).

    The mask itself is drawn outside the model (``utils.masking``) with an explicit generator, so
    a run is reproducible and the model stays a pure function of its inputs.
    """

    def __init__(self, config: STCLNConfig):
        super().__init__()
        self.config = config
        self.backbone = STCLN(config)
        token_size = 1 if config.mask_token == "scalar" else config.in_channels
        self.mask_token = nn.Parameter(torch.zeros(token_size))
        self.reconstruction = nn.Linear(config.d_model, config.in_channels)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Reconstruct masked cells.

        Args:
            x: (B, T, C, H, W) clean input, also the target.
            positions: (B, T) positions.
            mask: (B, T, H, W) bool, True = masked cell (all bands replaced by the token): the
                reconstruction targets (invalid cells must already be False, utils.masking).
            pad_mask: (B, T) bool, True = padded step.
            hidden: (B, T, H, W) bool, cells also replaced by the token but never targets
                (invalid cells with ``--hide_invalid``), or None.
            valid: (B, T, H, W) bool validity for the backbone (``config.use_valid_mask``), or None.

        Returns:
            ``loss`` (scalar MSE over masked cells), ``pred`` (B, T, C, H, W), ``mask``.
        """
        token = self.mask_token.to(x.dtype).view(1, 1, -1, 1, 1)  # (1 or C,) -> (1, 1, 1 or C, 1, 1)
        replaced = mask if hidden is None else mask | hidden
        masked_input = torch.where(replaced[:, :, None], token, x)
        features = self.backbone(masked_input, positions, pad_mask, valid)
        pred = self.reconstruction(features["temporal"])  # (B, H, W, T, C)
        pred = pred.permute(0, 3, 4, 1, 2)  # (B, H, W, T, C) -> (B, T, C, H, W)
        return {"loss": masked_mse(pred, x, mask), "pred": pred, "mask": mask}


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the bands of masked cells only.

    Args:
        pred, target: (B, T, C, H, W).
        mask: (B, T, H, W) bool, True = masked (padded cells must already be False).

    A batch with no masked cell gives a zero loss that still carries a graph, never NaN.
    """
    weight = mask[:, :, None].to(pred.dtype)  # (B, T, H, W) -> (B, T, 1, H, W)
    squared = (pred.float() - target.float()).square() * weight
    n_values = weight.sum() * pred.shape[2]
    return squared.sum() / n_values.clamp_min(1.0)
