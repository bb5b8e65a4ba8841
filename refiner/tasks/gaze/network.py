"""The gaze estimator network (imported only when a gaze estimator is built)."""

from __future__ import annotations

import torch
from torch import nn


class GazeCNN(nn.Module):
    """A small version of the paper's gaze estimator: convs, then dense layers that keep
    where in the 35x55 eye things are (the iris position relative to the lids is the answer)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((4, 6)))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 6, 128), nn.ReLU(inplace=True),
                                  nn.Linear(128, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
