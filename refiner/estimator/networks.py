"""Estimator networks a head can take for images of any shape (a world may bring its own)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from refiner.data import channels


class SmallCNN(nn.Module):
    """A small convolutional estimator for small images: three 3x3 convs, one pooling, then
    a linear head on a ``pooled`` grid of features (keeps where things are)."""

    def __init__(self, outputs: int, widths=(32, 64, 128), pooled: tuple[int, int] = (2, 2), hidden: int = 0,
                 in_channels: int = 1):
        super().__init__()
        a, b, c = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, a, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(a, b, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(b, c, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(pooled))
        size = c * pooled[0] * pooled[1]
        head = [nn.Linear(size, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, outputs)] if hidden else \
               [nn.Dropout(0.3), nn.Linear(size, outputs)]
        self.head = nn.Sequential(nn.Flatten(), *head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def small_classifier(outputs: int, image_shape: tuple[int, ...]) -> nn.Module:
    return SmallCNN(outputs, in_channels=channels(image_shape))


def small_regressor(outputs: int, image_shape: tuple[int, ...]) -> nn.Module:
    """Positions matter in a regression: a finer pooled grid and a hidden layer."""
    return SmallCNN(outputs, widths=(16, 32, 64), pooled=(4, 4), hidden=128, in_channels=channels(image_shape))


class StridedCNN(nn.Module):
    """The estimator for images of any size: 3x3 convs that each halve the resolution until it
    is at most 8 pixels a side (a 256x256 image costs about what a 32x32 one does in the
    digits' full-resolution CNN), then a linear head on a 4x4 grid of features, which keeps
    where things are (keypoints and boxes are positions). Outputs are ``offset + scale *``
    the head's, so a regression starts near its targets' middle."""

    def __init__(self, outputs: int, image_shape: tuple[int, ...], offset=None, scale=None, width: int = 32):
        super().__init__()
        self.register_buffer("offset", torch.as_tensor(np.zeros(outputs) if offset is None else offset, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(np.ones(outputs) if scale is None else scale, dtype=torch.float32))
        layers, in_channels, side = [], channels(image_shape), max(image_shape[:2])
        while True:
            out = min(width * 2 ** (len(layers) // 2), 128)
            layers += [nn.Conv2d(in_channels, out, 3, stride=2 if side > 8 else 1, padding=1), nn.ReLU(inplace=True)]
            in_channels, side = out, (side + 1) // 2
            if side <= 8:
                break
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d((4, 4)))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 16, 128), nn.ReLU(inplace=True),
                                  nn.Linear(128, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset + self.scale * self.head(self.features(x))
