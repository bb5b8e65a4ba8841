"""A camera model for the refiner: a camera's global effects as a few explicit, learned
parameters (Carlson et al. 2018, "Modeling camera effects to improve visual learning from
synthetic data"), trained adversarially with the residual refiner.

In order: lens blur (a Gaussian of learned sigma), a tone curve (per-channel gamma), white
balance (per-channel gain and offset), radial vignetting (the corners' gain) and sensor noise
(Gaussian, of learned sigma). Each is a per-pixel map or a symmetric blur, so every pixel
stays where it was: keypoints, boxes and masks stay valid by construction, and the
self-regularization L1 need only hold the residual refiner, not the camera.

Its noise is random: drawn from torch's RNG while training, and in eval mode from a hash of
each image's own pixels, so a refine job gives the same dataset whatever its batches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BLUR_RADIUS = 3  # a 7x7 kernel
MAX_BLUR = 2.0  # px: a bound, or the blur can run away past what the kernel holds (3.4 px seen)
LEVELS = 255.0  # noise and offsets are reported in 8-bit levels


class Camera(nn.Module):
    """Images in and out in the networks' [-1, 1] range, N x C x H x W."""

    def __init__(self, channels: int):
        super().__init__()
        # a sigma of 0.5 px is nearly the identity, yet its gradient is not (at 0.2 it vanishes)
        self.blur_logit = nn.Parameter(torch.logit(torch.tensor(0.5 / MAX_BLUR)))
        self.log_gamma = nn.Parameter(torch.zeros(channels))
        self.log_gain = nn.Parameter(torch.zeros(channels))
        self.offset = nn.Parameter(torch.zeros(channels))
        self.vignetting = nn.Parameter(torch.zeros(()))
        self.log_noise = nn.Parameter(torch.tensor(math.log(1 / LEVELS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = self.blur((x + 1) / 2).clamp(1e-4, 1)
        image = image ** self.log_gamma.exp().view(1, -1, 1, 1)
        image = image * self.log_gain.exp().view(1, -1, 1, 1) + self.offset.view(1, -1, 1, 1)
        image = image * self.vignette(*x.shape[-2:])
        image = image + self.log_noise.exp() * self.noise_like(image, x)
        return image.clamp(0, 1) * 2 - 1

    def blur(self, image: torch.Tensor) -> torch.Tensor:
        offsets = torch.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=image.dtype, device=image.device)
        kernel = torch.exp(-offsets ** 2 / (2 * self.blur_sigma() ** 2))
        kernel = kernel / kernel.sum()
        channels = image.shape[1]
        padded = F.pad(image, [BLUR_RADIUS] * 4, mode="replicate")  # no dark frame at the borders
        rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
        return F.conv2d(rows, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)

    def blur_sigma(self) -> torch.Tensor:
        return MAX_BLUR * torch.sigmoid(self.blur_logit)

    def vignette(self, height: int, width: int) -> torch.Tensor:
        """The gain at each pixel: 1 at the centre, 1 - vignetting at the corners."""
        yy = torch.linspace(-0.5, 0.5, height, device=self.vignetting.device).view(-1, 1)
        xx = torch.linspace(-0.5, 0.5, width, device=self.vignetting.device).view(1, -1)
        return 1 - self.vignetting * 2 * (xx ** 2 + yy ** 2)

    def noise_like(self, image: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        if self.training:
            return torch.randn_like(image)
        return content_noise(inputs).to(image.dtype)

    @torch.no_grad()
    def settings(self) -> dict[str, float]:
        """The learned camera in plain numbers: blur sigma in pixels, gamma, gain and offset
        (8-bit levels) per channel, the corners' vignetting and the noise sigma in levels."""
        names = "rgb" if len(self.log_gain) == 3 else [str(c) for c in range(len(self.log_gain))]
        values = {"blur_sigma_px": self.blur_sigma().item(), "vignetting": self.vignetting.item(),
                  "noise_sigma_levels": self.log_noise.exp().item() * LEVELS}
        for name, gamma, gain, offset in zip(names, self.log_gamma.exp(), self.log_gain.exp(), self.offset):
            values |= {f"gamma_{name}": gamma.item(), f"gain_{name}": gain.item(), f"offset_{name}": offset.item() * LEVELS}
        return values


def content_noise(images: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``images`` (N x C x H x W in [-1, 1]) whose seed is
    each image's own 8-bit pixels: an image gets the same noise in any batch and on any run.
    Integer hashing in torch ops (not a torch.Generator per image), so the model still
    exports with torch.export for MLflow."""
    pixels = ((images.detach() + 1) * 127.5).round().clamp(0, 255).to(torch.int64).flatten(1)
    positions = torch.arange(pixels.shape[1], device=images.device)
    seeds = _hash32((pixels * (positions % 251 + 1)).sum(1, keepdim=True) & MASK32)  # N x 1
    counters = seeds * 2 * pixels.shape[1] + 2 * positions  # two uniforms per pixel
    uniform = lambda offset: (_hash32((counters + offset) & MASK32).double() + 0.5) / 2 ** 32  # noqa: E731
    normal = torch.sqrt(-2 * torch.log(uniform(0))) * torch.cos(2 * math.pi * uniform(1))  # Box-Muller
    return normal.view(images.shape)


MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (its products stay under 2**59: no int64 overflow)."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & MASK32
    return (x >> 16) ^ x


def describe(settings: dict[str, float]) -> str:
    """E.g. "the camera is 12% warmer (gain r 1.10, g 1.00, b 0.87), vignetting 0.45 at the
    corners, blur sigma 0.9 px, noise sigma 7.1 levels"."""
    gains = {key[5:]: value for key, value in settings.items() if key.startswith("gain_")}
    colour = ", ".join(f"{name} {gain:.2f}" for name, gain in gains.items())
    if {"r", "b"} <= set(gains):
        warmth = gains["r"] / gains["b"] - 1
        colour = f"{abs(warmth):.0%} {'warmer' if warmth >= 0 else 'cooler'} (gain {colour})"
    else:  # one channel: no colour, only a gain
        colour = "gain " + ", ".join(f"{gain:.2f}" for gain in gains.values())
    corners = "" if settings["vignetting"] >= 0 else " (brighter corners)"
    return (f"the camera is {colour}, vignetting {settings['vignetting']:.2f} at the corners{corners}, "
            f"blur sigma {settings['blur_sigma_px']:.2f} px, noise sigma {settings['noise_sigma_levels']:.1f} levels")


class CameraRefiner(nn.Module):
    """The residual refiner (or none: the camera alone), then the camera. ``parts(x)`` gives
    (the residual refiner's scene, the camera's image): the self-regularization holds the
    scene, the discriminator judges the image."""

    def __init__(self, residual: nn.Module | None, camera: Camera):
        super().__init__()
        self.residual, self.camera = residual, camera

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scene = x if self.residual is None else self.residual(x)
        return scene, self.camera(scene)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x)[1]
