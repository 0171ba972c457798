"""Task wrappers around the backbone: masked reconstruction and segmentation."""

import torch
from torch import nn

from .config import STCLNConfig
from .sta import STAFusion
from .stcln import STCLN


PRIMARY = "primary"  # the key of the primary source in per-source outputs (``losses``)


def is_late(config: STCLNConfig) -> bool:
    """True for a multi-source model with ``fusion="late"`` (per-source STA and fusion layers)."""
    return bool(config.extra_sources) and config.fusion == "late"


class STCLNSegmenter(nn.Module):
    """STCLN + STA fusion + per-pixel linear classifier (the authors' ``UTAEClassification``).

    With ``fusion="late"`` every extra source s has its own STA (``extra_sta.<s>``) on its own
    features and a linear layer (``fusion.<s>``, D -> D) that adds its output to the primary's STA
    output before the classifier: z = STA(primary) + sum_s fusion_s(STA_s(s)). With ``fusion.<s>``
    at zero the model is the single-source model on the primary (tested). With ``fusion="merged"``
    the one STA runs over the joint sequence of all sources' dates.
    """

    def __init__(self, config: STCLNConfig):
        super().__init__()
        self.config = config
        self.backbone = STCLN(config)
        self.sta = STAFusion(config.d_model, config.sta_scale, config.sta_chunk)
        self.classifier = nn.Linear(config.d_model, config.num_classes)
        self.backbone_frozen = False
        if is_late(config):
            self.extra_sta = nn.ModuleDict(
                {name: STAFusion(config.d_model, config.sta_scale, config.sta_chunk) for name in config.extra_sources}
            )
            self.fusion = nn.ModuleDict(
                {name: nn.Linear(config.d_model, config.d_model) for name in config.extra_sources}
            )

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
        extra: dict | None = None,
    ) -> torch.Tensor:
        """(B, T, C, H, W) series, (B, T) positions -> (B, K, H, W) logits; ``valid`` (B, T, H, W)
        per-cell validity, honoured with ``config.use_valid_mask``; ``extra`` the further sources,
        ``{source: (x_s, positions_s, pad_mask_s)}`` (:meth:`STCLN.forward`)."""
        B, T, C, H, W = x.shape
        logits = self.classifier(self.features(x, positions, pad_mask, valid, extra))  # (B, HW, K)
        return logits.transpose(1, 2).reshape(B, -1, H, W)  # (B, HW, K) -> (B, K, H, W)

    def features(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        extra: dict | None = None,
    ) -> torch.Tensor:
        """(B, HW, D): the classifier's input, every source fused (arguments as :meth:`forward`); what
        utils.select_labels pools and what BADGE differentiates the classifier at."""
        features = self.backbone(x, positions, pad_mask, valid, extra)
        fused = self.sta(
            features["temporal"], features["spatial"], features["pad_mask"], features["dropped"]
        )  # (B, HW, D)
        if is_late(self.config):
            for name in self.config.extra_sources:
                own = features["extra"][name]
                sta = self.extra_sta[name](
                    own["temporal"], own["spatial"], own["pad_mask"], own["dropped"]
                )  # (B, HW, D)
                fused = fused + self.fusion[name](sta)
        return fused


class STCLNPretrain(nn.Module):
    """STCLN + mask token + linear reconstruction of every band (the authors' ``UTAEPrediction``).

    The mask itself is drawn outside the model (``utils.masking``) with an explicit generator, so
    a run is reproducible and the model stays a pure function of its inputs.

    With extra sources every source has its own mask token (``extra_mask_tokens.<s>``) and
    reconstruction layer (``extra_reconstruction.<s>``), and each is reconstructed from features
    that saw every source: under ``fusion="merged"`` the joint Transformer's outputs at that source's
    dates; under ``fusion="late"`` its own temporal features plus, per pixel, a context from the
    other sources (their temporal features max-pooled over their dates, each projected by a linear
    layer ``context.<s>`` / ``context_primary``). The loss is the mean over the sources that have
    masked cells of each source's masked-cell MSE (docs/method.md §2.5).
    """

    def __init__(self, config: STCLNConfig):
        super().__init__()
        self.config = config
        self.backbone = STCLN(config)
        token_size = 1 if config.mask_token == "scalar" else config.in_channels
        self.mask_token = nn.Parameter(torch.zeros(token_size))
        self.reconstruction = nn.Linear(config.d_model, config.in_channels)
        if config.extra_sources:
            sizes = config.extra_source_channels()
            self.extra_mask_tokens = nn.ParameterDict(
                {
                    name: nn.Parameter(torch.zeros(1 if config.mask_token == "scalar" else bands))
                    for name, bands in sizes.items()
                }
            )
            self.extra_reconstruction = nn.ModuleDict(
                {name: nn.Linear(config.d_model, bands) for name, bands in sizes.items()}
            )
        if is_late(config):
            self.context_primary = nn.Linear(config.d_model, config.d_model)
            self.context = nn.ModuleDict(
                {name: nn.Linear(config.d_model, config.d_model) for name in config.extra_sources}
            )

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        hidden: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        extra: dict | None = None,
        extra_masks: dict | None = None,
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
            extra: the further sources, ``{source: (x_s, positions_s, pad_mask_s)}``, clean.
            extra_masks: ``{source: (B, T_s, H, W) bool}`` their masked cells (padding False).

        Returns:
            ``loss`` (scalar), ``pred`` (B, T, C, H, W), ``mask``; with extra sources also
            ``losses`` ({"primary" and each source: its masked-cell MSE}) and ``preds`` ({source: (B, T_s, C_s, H, W)}).
        """
        token = self.mask_token.to(x.dtype).view(1, 1, -1, 1, 1)  # (1 or C,) -> (1, 1, 1 or C, 1, 1)
        replaced = mask if hidden is None else mask | hidden
        masked_input = torch.where(replaced[:, :, None], token, x)
        if not self.config.extra_sources:
            features = self.backbone(masked_input, positions, pad_mask, valid, extra)
            pred = self.reconstruction(features["temporal"])  # (B, H, W, T, C)
            pred = pred.permute(0, 3, 4, 1, 2)  # (B, H, W, T, C) -> (B, T, C, H, W)
            return {"loss": masked_mse(pred, x, mask), "pred": pred, "mask": mask}
        if set(extra_masks or ()) != set(self.config.extra_sources):
            raise ValueError(
                f"extra_masks must hold a mask for each of {list(self.config.extra_sources)}, "
                f"got {list(extra_masks or ())}"
            )
        masked_extra = {}
        for name, (x_s, positions_s, pad_s) in (extra or {}).items():
            token_s = (
                self.extra_mask_tokens[name].to(x_s.dtype).view(1, 1, -1, 1, 1)
            )  # (1 or C_s,) -> (1, 1, 1 or C_s, 1, 1)
            masked_extra[name] = (torch.where(extra_masks[name][:, :, None], token_s, x_s), positions_s, pad_s)
        features = self.backbone(masked_input, positions, pad_mask, valid, masked_extra)
        hidden_states = self.source_features(features)  # {PRIMARY or source: (B, H, W, T_s, D)}
        heads = {PRIMARY: self.reconstruction} | dict(self.extra_reconstruction.items())
        targets = {PRIMARY: (x, mask)} | {
            name: (extra[name][0], extra_masks[name]) for name in self.config.extra_sources
        }
        preds = {
            name: heads[name](states).permute(0, 3, 4, 1, 2)  # (B, H, W, T_s, C_s) -> (B, T_s, C_s, H, W)
            for name, states in hidden_states.items()
        }
        loss, losses = multisource_mse(preds, targets)
        pred = preds.pop(PRIMARY)
        return {"loss": loss, "pred": pred, "mask": mask, "losses": losses, "preds": preds}

    def source_features(self, features: dict) -> dict[str, torch.Tensor]:
        """Per source the (B, H, W, T_s, D) features its reconstruction reads (see the class docstring)."""
        names = (PRIMARY, *self.config.extra_sources)
        if not is_late(self.config):  # merged: the joint Transformer's outputs, cut back into sources
            return dict(zip(names, features["temporal"].split(features["split"], dim=3)))
        own = {PRIMARY: features} | features["extra"]
        layers = {PRIMARY: self.context_primary} | dict(self.context.items())
        contexts = {
            name: layers[name](pool_time(f["temporal"], f["pad_mask"], f["dropped"])) for name, f in own.items()
        }
        out = {}
        for name in names:
            others = sum(context for other, context in contexts.items() if other != name)  # (B, H, W, D)
            out[name] = own[name]["temporal"] + others[:, :, :, None]  # (B, H, W, D) -> (B, H, W, 1, D)
        return out


def pool_time(temporal: torch.Tensor, pad_mask: torch.Tensor | None, dropped: torch.Tensor | None) -> torch.Tensor:
    """Max over the dates a pixel uses, as the STA value path: (B, H, W, T, D) -> (B, H, W, D)."""
    out = temporal
    if pad_mask is not None:
        out = out.masked_fill(pad_mask[:, None, None, :, None], float("-inf"))  # (B, T) -> (B, 1, 1, T, 1)
    if dropped is not None:
        out = out.masked_fill(dropped[..., None], float("-inf"))  # (B, H, W, T) -> (B, H, W, T, 1)
    return out.amax(dim=3)


def multisource_mse(
    preds: dict[str, torch.Tensor], targets: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The multi-source pre-training loss: the mean, over the sources with at least one masked cell,
    of each source's :func:`masked_mse` (docs/method.md §2.5).

    Args:
        preds: {source: (B, T_s, C_s, H, W)} reconstructions.
        targets: {source: (target (B, T_s, C_s, H, W), mask (B, T_s, H, W) bool)}; padded cells False.

    Returns (loss, {source: its masked-cell MSE}). Each source weighs the same whatever its number of
    masked cells or bands; a source without a masked cell in the batch (e.g. optical dates all
    below the NDVI gate) is left out of the mean instead of pulling it towards 0.
    """
    losses = {name: masked_mse(preds[name], *targets[name]) for name in preds}
    with_cells = torch.stack([targets[name][1].any() for name in losses]).sum()  # sources with a masked cell
    loss = torch.stack(list(losses.values())).sum() / with_cells.clamp_min(1)  # a source without any adds 0
    return loss, losses


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
