"""Arrays as the datasets hold them (N x H x W grayscale, N x H x W x C colour, floats in
[0, 1]) <-> the N x C x H x W tensors every network here takes."""

from __future__ import annotations

import numpy as np
import torch


def channels_first(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))
    return x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def channels_last(batch: torch.Tensor) -> np.ndarray:
    """The inverse of ``channels_first``: N x 1 x H x W -> N x H x W, N x C x H x W -> N x H x W x C."""
    batch = batch.detach().cpu().float()
    return (batch[:, 0] if batch.shape[1] == 1 else batch.permute(0, 2, 3, 1)).numpy()
