"""Spatial branch: a per-date CNN without down-sampling (docs/method.md §1.2)."""

import torch
from torch import nn


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that normalises in fp32 under autocast (statistics and running buffers).

    Same parameters and state-dict keys as ``nn.BatchNorm2d``; without autocast it is that module.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv3x3 (no bias) -> BN -> ReLU, twice. Indices 0/1/3/4 match the authors' ``double_conv``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SpatialEncoder(nn.Module):
    """Two DoubleConv blocks applied to every date on its own: C -> widths[0] -> widths[1].

    The receptive field is 9x9 pixels; there is no pooling, so features stay at full resolution.
    """

    def __init__(self, in_channels: int, widths: tuple[int, int]):
        super().__init__()
        self.block1 = double_conv(in_channels, widths[0])
        self.block2 = double_conv(widths[0], widths[1])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) frames -> (N, D, H, W) features."""
        return self.block2(self.block1(frames))
