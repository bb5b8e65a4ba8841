"""A camera model for the refiner: a camera's global effects as a few explicit, learned
parameters (Carlson et al. 2018, "Modeling camera effects to improve visual learning from
synthetic data"), trained adversarially with the residual refiner.

The optics, in order: lens blur (a Gaussian of learned sigma), a tone curve (per-channel
gamma), white balance (per-channel gain and offset), radial vignetting (the corners' gain).
Then the sensor: noise whose variance is linear in the brightness between its sigmas in black
and in white (Poisson–Gaussian, Foi et al. 2008, where it grows: a read noise plus a shot
noise; a tone curve after the sensor makes it shrink), its grain (a learned isotropic 5x5
kernel over the noise: neighbours' noise alike, as after demosaicing, or a fine texture), how
much of it is colour, and, where the real frames are JPEG-coded, JPEG at their own qualities
(kornia's differentiable codec). Each is a per-pixel map, a symmetric blur or a codec on a
fixed block grid, so every pixel stays where it was: keypoints, boxes and masks stay valid by
construction, and the self-regularization L1 need only hold the residual refiner.

The optics learn from the adversarial loss, the sensor from ``refiner.simgan.sensor``'s
statistics (the game gives noise no usable gradient: that module says why). Its noise is
random: drawn from torch's RNG while training, and in eval mode from a hash of each image's
own pixels, so a refine job gives the same dataset whatever its batches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BLUR_RADIUS = 3  # a 7x7 kernel
MAX_BLUR = 2.0  # px: a bound, or the blur can run away past what the kernel holds (3.4 px seen)
LEVELS = 255.0  # noise and offsets are reported in 8-bit levels
GRAIN_RADIUS = 2  # a 5x5 grain kernel
# the grain kernel's rings (squared distances from its centre): isotropic, so the noise has no direction
GRAIN_RINGS = (1, 2, 4, 5, 8)
JPEG_QUANTILES = 16  # the real frames' JPEG qualities, kept as this many quantiles


class Camera(nn.Module):
    """Images in and out in the networks' [-1, 1] range, N x C x H x W. ``jpeg_qualities``: the
    real frames' JPEG qualities (``refiner.simgan.sensor.frame_qualities``), each image coded at
    one of them; None: no JPEG stage (an empty tensor of any values: one, filled by a checkpoint)."""

    def __init__(self, channels: int, jpeg_qualities=None):
        super().__init__()
        # a sigma of 0.5 px is nearly the identity, yet its gradient is not (at 0.2 it vanishes)
        self.blur_logit = nn.Parameter(torch.logit(torch.tensor(0.5 / MAX_BLUR)))
        self.log_gamma = nn.Parameter(torch.zeros(channels))
        self.log_gain = nn.Parameter(torch.zeros(channels))
        self.offset = nn.Parameter(torch.zeros(channels))
        self.vignetting = nn.Parameter(torch.zeros(()))
        # the sensor: the noise's sigma in black and in white, its variance linear in the
        # brightness between them (Poisson-Gaussian where it grows; a tone curve after the sensor
        # makes it shrink), in log: each travels as far per step at 1 level as at 20; the grain's
        # ring weights around a centre of 1 (0: white noise)
        self.log_noise = nn.Parameter(torch.tensor(math.log(1 / LEVELS)))
        self.log_noise_white = nn.Parameter(torch.tensor(math.log(1 / LEVELS)))
        self.grain = nn.Parameter(torch.zeros(len(GRAIN_RINGS)))
        # colour: the share of the noise's variance that differs between channels (a logit, from
        # 0.8); the rest is one grey noise, as after demosaicing, JPEG's chroma or on grey frames
        self.colour_logit = nn.Parameter(torch.logit(torch.tensor(0.8))) if channels == 3 else None
        if jpeg_qualities is not None:
            quantiles = torch.linspace(0, 1, JPEG_QUANTILES, dtype=torch.float64)
            qualities = torch.quantile(torch.as_tensor(jpeg_qualities, dtype=torch.float64), quantiles).float() \
                if len(jpeg_qualities) else torch.zeros(JPEG_QUANTILES)
            self.register_buffer("jpeg_qualities", qualities)
        else:
            self.jpeg_qualities = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sensor(self.optics(x), x)

    def optics(self, x: torch.Tensor) -> torch.Tensor:
        """Blur, tone, white balance and vignetting: the noise-free image, in [0, 1] (about)."""
        image = self.blur((x + 1) / 2).clamp(1e-4, 1)
        image = image ** self.log_gamma.exp().view(1, -1, 1, 1)
        image = image * self.log_gain.exp().view(1, -1, 1, 1) + self.offset.view(1, -1, 1, 1)
        return image * self.vignette(*x.shape[-2:])

    def sensor(self, image: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Noise (by brightness, grained, coloured) and JPEG on the optics' image; back to [-1, 1]."""
        black, white = self.log_noise.exp() ** 2, self.log_noise_white.exp() ** 2
        variance = black + (white - black) * image.clamp(0, 1)
        image = (image + variance.sqrt() * self.grained(self.coloured(self.noise_like(image, x), x))).clamp(0, 1)
        if self.jpeg_qualities is not None:
            image = jpeg(image, self.jpeg_qualities[self.quality_index(x)])
        return image * 2 - 1

    def quality_index(self, inputs: torch.Tensor) -> torch.Tensor:
        """Which of the qualities codes each image: drawn while training, in eval mode the
        image's own (from its pixels, as its noise)."""
        if self.training:
            return torch.randint(JPEG_QUANTILES, (len(inputs),), device=inputs.device)
        return content_seeds(inputs).view(-1) % JPEG_QUANTILES

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

    @torch.no_grad()
    def start_noise(self, black: float, white: float) -> None:
        """Start the noise at these sigmas ([0, 1] units: in black, in white)."""
        self.log_noise.fill_(math.log(black))
        self.log_noise_white.fill_(math.log(white))

    @torch.no_grad()
    def without_new_sensor(self) -> None:
        """The sensor a checkpoint from before its noise level by brightness, grain and colour
        share had: white noise of one sigma, independent between channels (as it refined then,
        up to rounding)."""
        self.log_noise_white.copy_(self.log_noise)
        self.grain.zero_()
        if self.colour_logit is not None:
            self.colour_logit.fill_(20.0)

    def grain_kernel(self) -> torch.Tensor:
        """The 5x5 kernel over white noise, scaled to unit energy: the grain changes how the
        noise looks, not how strong it is (that is the noise level's)."""
        offsets = torch.arange(-GRAIN_RADIUS, GRAIN_RADIUS + 1, device=self.grain.device)
        rings = offsets.view(-1, 1) ** 2 + offsets.view(1, -1) ** 2
        kernel = torch.ones(rings.shape, dtype=self.grain.dtype, device=self.grain.device)
        for weight, ring in zip(self.grain, GRAIN_RINGS):
            kernel = torch.where(rings == ring, weight, kernel)
        return kernel / kernel.square().sum().sqrt()

    def grained(self, white: torch.Tensor) -> torch.Tensor:
        channels = white.shape[1]
        kernel = self.grain_kernel().to(white.dtype).view(1, 1, *self.grain_kernel().shape).repeat(channels, 1, 1, 1)
        return F.conv2d(F.pad(white, [GRAIN_RADIUS] * 4, mode="circular"), kernel, groups=channels)

    def noise_like(self, image: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        if self.training:
            return torch.randn_like(image)
        return content_noise(inputs).to(image.dtype)

    def coloured(self, white: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Unit noise whose channels share ``1 - colour`` of their variance: a grey draw (in eval
        mode the negated image's own: another hash, the same reproducibility) mixed in."""
        if self.colour_logit is None:
            return white
        grey = torch.randn_like(white[:, :1]) if self.training else content_noise(-inputs)[:, :1].to(white.dtype)
        colour = torch.sigmoid(self.colour_logit)
        return colour.sqrt() * white + (1 - colour).sqrt() * grey

    @torch.no_grad()
    def settings(self) -> dict[str, float]:
        """The learned camera in plain numbers: blur sigma in pixels, gamma, gain and offset
        (8-bit levels) per channel, the corners' vignetting; the noise sigma in levels at
        mid-grey (``noise_sigma_levels``), in black and in white, the grain
        (the noise's correlation between neighbouring pixels, 0: white), for colour the share
        of the noise that differs between channels, and the JPEG qualities."""
        names = "rgb" if len(self.log_gain) == 3 else [str(c) for c in range(len(self.log_gain))]
        black, white = self.log_noise.exp().item() ** 2, self.log_noise_white.exp().item() ** 2
        sigma = lambda brightness: math.sqrt(black + (white - black) * brightness) * LEVELS  # noqa: E731
        kernel = self.grain_kernel()
        values = {"blur_sigma_px": self.blur_sigma().item(), "vignetting": self.vignetting.item(),
                  "noise_sigma_levels": sigma(0.5), "noise_black_levels": sigma(0), "noise_white_levels": sigma(1),
                  "grain": (kernel[:, 1:] * kernel[:, :-1]).sum().item()}
        if self.colour_logit is not None:
            values["colour_noise"] = torch.sigmoid(self.colour_logit).item()
        if self.jpeg_qualities is not None:  # the median and the middle 80% of the frames' qualities
            values |= {"jpeg_quality": self.jpeg_qualities.median().item(),
                       "jpeg_quality_low": torch.quantile(self.jpeg_qualities, 0.1).item(),
                       "jpeg_quality_high": torch.quantile(self.jpeg_qualities, 0.9).item()}
        for name, gamma, gain, offset in zip(names, self.log_gamma.exp(), self.log_gain.exp(), self.offset):
            values |= {f"gamma_{name}": gamma.item(), f"gain_{name}": gain.item(), f"offset_{name}": offset.item() * LEVELS}
        return values

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(the optics', the sensor's) parameters: the sensor's learn from its statistics, and
        faster (``SENSOR_LR``)."""
        sensor = [self.log_noise, self.log_noise_white, self.grain, self.colour_logit]
        sensor = [p for p in sensor if p is not None]
        return [p for p in self.parameters() if all(p is not q for q in sensor)], sensor


# the sensor's learning rate over the optics': where the statistics' fit starts it is off by the
# grain and the JPEG, which hide noise (3 levels where 10: tests/test_sensor.py), and it must
# travel that in a few hundred steps
SENSOR_LR = 10.0


def jpeg(image01: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG coded and decoded at ``quality`` (one per image; kornia's differentiable codec, 4:2:0
    chroma as libjpeg's default); one channel is coded as grey (its chroma constant) and comes
    back as one."""
    from kornia.enhance import jpeg_codec_differentiable
    if image01.shape[1] == 3:
        return jpeg_codec_differentiable(image01, quality)
    return jpeg_codec_differentiable(image01.expand(-1, 3, -1, -1), quality).mean(1, keepdim=True)


def content_noise(images: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``images`` (N x C x H x W in [-1, 1]) whose seed is
    each image's own 8-bit pixels: an image gets the same noise in any batch and on any run.
    Integer hashing in torch ops (not a torch.Generator per image), so the model still
    exports with torch.export for MLflow."""
    pixels = ((images.detach() + 1) * 127.5).round().clamp(0, 255).to(torch.int64).flatten(1)
    positions = torch.arange(pixels.shape[1], device=images.device)
    seeds = content_seeds(images)  # N x 1
    counters = seeds * 2 * pixels.shape[1] + 2 * positions  # two uniforms per pixel
    uniform = lambda offset: (_hash32((counters + offset) & MASK32).double() + 0.5) / 2 ** 32  # noqa: E731
    normal = torch.sqrt(-2 * torch.log(uniform(0))) * torch.cos(2 * math.pi * uniform(1))  # Box-Muller
    return normal.view(images.shape)


MASK32 = 0xFFFFFFFF


def content_seeds(images: torch.Tensor) -> torch.Tensor:
    """N x 1 32-bit seeds, each from one image's own 8-bit pixels (N x C x H x W in [-1, 1])."""
    pixels = ((images.detach() + 1) * 127.5).round().clamp(0, 255).to(torch.int64).flatten(1)
    positions = torch.arange(pixels.shape[1], device=images.device)
    return _hash32((pixels * (positions % 251 + 1)).sum(1, keepdim=True) & MASK32)


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (its products stay under 2**59: no int64 overflow)."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & MASK32
    return (x >> 16) ^ x


def describe(settings: dict[str, float]) -> str:
    """E.g. "the camera is 12% warmer (gain r 1.10, g 1.00, b 0.87), vignetting 0.45 at the
    corners, blur sigma 0.90 px, noise sigma 7.1 levels at mid-grey (2.0 in black, 9.8 in white),
    grain 0.30 (40% of it colour), JPEG quality 55 (38-76 for 80% of the frames)"; the sensor's
    parts are said where ``settings`` has them."""
    gains = {key[5:]: value for key, value in settings.items() if key.startswith("gain_")}
    colour = ", ".join(f"{name} {gain:.2f}" for name, gain in gains.items())
    if {"r", "b"} <= set(gains):
        warmth = gains["r"] / gains["b"] - 1
        colour = f"{abs(warmth):.0%} {'warmer' if warmth >= 0 else 'cooler'} (gain {colour})"
    else:  # one channel: no colour, only a gain
        colour = "gain " + ", ".join(f"{gain:.2f}" for gain in gains.values())
    corners = "" if settings["vignetting"] >= 0 else " (brighter corners)"
    text = (f"the camera is {colour}, vignetting {settings['vignetting']:.2f} at the corners{corners}, "
            f"blur sigma {settings['blur_sigma_px']:.2f} px, noise sigma {settings['noise_sigma_levels']:.1f} levels")
    if "noise_black_levels" in settings:
        text += (f" at mid-grey ({settings['noise_black_levels']:.1f} in black, {settings['noise_white_levels']:.1f} "
                 f"in white), grain {settings['grain']:.2f}")
    if "colour_noise" in settings:
        text += f" ({settings['colour_noise']:.0%} of it colour)"
    if "jpeg_quality" in settings:
        text += (f", JPEG quality {settings['jpeg_quality']:.0f} ({settings['jpeg_quality_low']:.0f}-"
                 f"{settings['jpeg_quality_high']:.0f} for 80% of the frames)")
    return text


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
