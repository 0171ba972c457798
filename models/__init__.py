"""STCLN models.

Shape glossary (used in every shape comment of this repository):
    B batch, T dates, C bands, H, W pixels, D feature width (d_model), nh heads, dh head width,
    K classes, L pixels of one sample (H*W), N a flattened batch of frames or sequences.
"""

from .config import STCLNConfig, paper_config, small_config, tiny_config
from .heads import STCLNPretrain, STCLNSegmenter, masked_mse, multisource_mse
from .stcln import STCLN

__all__ = ["STCLN", "STCLNConfig", "STCLNPretrain", "STCLNSegmenter", "masked_mse", "multisource_mse", "paper_config", "small_config", "tiny_config"]
