"""The SimGAN networks (Shrivastava et al. 2017, Sec. 3 and Appendix).

Refiner: 3x3 conv -> N ResNet blocks (two 3x3 convs each) -> 1x1 conv -> tanh.
Fully convolutional with no striding, so it works on any image size and keeps every pixel
aligned with its input (which is what makes the self-regularization loss meaningful).

Discriminator: a small conv net whose output is a grid of logits, one per local patch
(the paper's local adversarial loss). Images in and out are in [-1, 1].
"""

from __future__ import annotations

import torch
from torch import nn


class ResnetBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class Refiner(nn.Module):
    def __init__(self, in_channels: int = 1, channels: int = 64, num_blocks: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            *[ResnetBlock(channels) for _ in range(num_blocks)],
            nn.Conv2d(channels, in_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x))

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the self-regularization holds, what the discriminator judges): here the same."""
        refined = self(x)
        return refined, refined


class Discriminator(nn.Module):
    """Conv layers given as (channels, stride) pairs, then a 1x1 conv to one logit per patch.

    With ``num_classes``, class-conditional by projection (Miyato & Koyama 2018): each patch's
    logit also gets the inner product of its features with an embedding of the image's
    class, so D judges "a real 9" rather than "real", and a refined 9 must look like real 9s."""

    def __init__(self, in_channels: int = 1, layers: tuple[tuple[int, int], ...] = ((32, 1), (64, 2), (64, 1)),
                 num_classes: int = 0):
        super().__init__()
        modules: list[nn.Module] = []
        previous = in_channels
        for channels, stride in layers:
            modules += [nn.Conv2d(previous, channels, 3, stride=stride, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            previous = channels
        self.features = nn.Sequential(*modules)
        self.head = nn.Conv2d(previous, 1, 1)
        self.embedding = nn.Embedding(num_classes, previous) if num_classes else None

    def forward(self, x: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        features = self.features(x)
        logits = self.head(features).flatten(1)  # N x patches
        if self.embedding is not None:
            logits = logits + torch.einsum("nchw,nc->nhw", features, self.embedding(classes)).flatten(1)
        return logits


class GlobalDiscriminator(nn.Module):
    """One logit per image from the whole image: 3x3 stride-2 convs (width doubling from
    ``width``, at most 4x) down to about 4x4, pooled to 4x4 and read by one linear layer that
    knows where each cell lies. It sees what a patch cannot: a colour cast over the whole
    frame, vignetting (darker corners than centre), the image's overall tone (Iizuka et al.
    2017's global + local discriminators)."""

    def __init__(self, in_channels: int, image_shape: tuple[int, int], width: int = 32):
        super().__init__()
        modules: list[nn.Module] = []
        previous, size, channels = in_channels, min(image_shape), width
        while True:
            modules += [nn.Conv2d(previous, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            previous, size = channels, (size + 1) // 2
            channels = min(channels * 2, width * 4)
            if size <= 4:
                break
        self.features = nn.Sequential(*modules, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Linear(previous * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # N x 1


def count_macs(model: nn.Module, image_shape: tuple[int, int], in_channels: int = 1) -> int:
    """Multiply-accumulates of one forward pass on one image (convolutions only)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += output.numel() * kernel

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, in_channels, *image_shape))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return total
