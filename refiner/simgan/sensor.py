"""What a camera's sensor adds to an image, measured: statistics of its finest detail that the
sensor sets and a scene hardly does: the noise level at four brightnesses (a Poisson–Gaussian
sensor's noise grows with the signal, Foi et al. 2008; a tone curve after it can make it
shrink), the noise's grain (how alike its neighbours are) and, for colour, how much of it
differs between channels. And the JPEG quality each real frame was saved at, read off its DCT
coefficients.

Why the camera model needs them: the adversarial loss gives its noise no usable gradient.
The first-order effect of a noise draw on the discriminator averages to zero; what is left is
second order in the noise level and, through the loss's convexity, pushes the noise *down*
unless the discriminator happens to measure noise energy (measured: experiments/README.md,
issue 39). Matching these statistics between refined and real images gives the sensor's few
parameters a direct, first-order signal, with no label (the real pool's statistics only).
JPEG's quality is read, not learnt: the differentiable codec's slope in its quality is its
rounding's, local and misleading, and more noise under harder compression matches the same
statistics as less noise under lighter compression; a frame's own quantization grid says
which (exactly, up to quality 85, on the shapes example's frames).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

BRIGHTNESS_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0001)  # four bins of the local brightness
TRIM = 0.8  # the noise estimate keeps the 80% smallest high-pass values: scene edges are the tail
MIN_SHARE = 0.02  # a brightness bin with fewer of the pixels is left out of the comparison
# Immerkaer (1996): zero on flat areas and linear ramps (so vignetting and shading do not
# count), and white noise of sigma comes out with sigma: its weights' squares sum to 1
LAPLACE = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]) / 6


def high_pass(images: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> N x C x (H-2) x (W-2): Immerkaer's noise filter on each channel."""
    channels = images.shape[1]
    kernel = LAPLACE.to(images).view(1, 1, 3, 3).repeat(channels, 1, 1, 1)
    return F.conv2d(images, kernel, groups=channels)


def trimmed_sigma(values: torch.Tensor) -> torch.Tensor:
    """A noise sigma robust to edges: the root mean square of the ``TRIM`` smallest magnitudes
    (for Gaussian noise a fixed share of sigma; only compared with itself, so no constant)."""
    magnitudes = values.abs().flatten()
    limit = magnitudes.detach().kthvalue(max(1, int(TRIM * magnitudes.numel()))).values  # 7x quantile's speed
    kept = magnitudes[magnitudes <= limit]
    return (kept.square().mean() + 1e-12).sqrt()


class Statistics(NamedTuple):
    """``levels``: per channel the log noise sigma in each brightness bin, with ``weights`` (0
    where the bin holds under ``MIN_SHARE`` of the pixels); ``shape``: the noise's shape, its
    grain twice (how much of it survives a 2x2 average and how alike neighbours are, as log
    ratios of sigmas; the noise filter's correlation 1 and 2 pixels apart) and, for colour, how
    much of it differs between channels."""
    levels: torch.Tensor
    weights: torch.Tensor
    shape: torch.Tensor


def statistics(images01: torch.Tensor) -> Statistics:
    """Of images N x C x H x W in [0, 1]."""
    residual = high_pass(images01)
    brightness = F.avg_pool2d(images01.detach(), 3, stride=1)  # the same pixels as the residual
    levels, weights = [], []
    for channel in range(images01.shape[1]):
        for low, high in zip(BRIGHTNESS_EDGES, BRIGHTNESS_EDGES[1:]):
            inside = (brightness[:, channel] >= low) & (brightness[:, channel] < high)
            enough = inside.float().mean() >= MIN_SHARE
            levels.append(trimmed_sigma(residual[:, channel][inside]).log() if enough else residual.new_zeros(()))
            weights.append(float(enough))
    fine = trimmed_sigma(residual)
    coarse = trimmed_sigma(high_pass(F.avg_pool2d(images01, 2)))  # white noise: half of fine
    neighbours = trimmed_sigma(images01.diff(dim=3)) / 2 ** 0.5  # white noise: fine; correlated: less
    shape = [(coarse / fine).log(), (neighbours / fine).log(), correlation(residual, 1), correlation(residual, 2)]
    if images01.shape[1] == 3:
        shape.append(colour_share(residual))
    return Statistics(torch.stack(levels), torch.tensor(weights, device=images01.device), torch.stack(shape))


def correlation(residual: torch.Tensor, lag: int) -> torch.Tensor:
    """How alike the noise filter's outputs ``lag`` pixels apart are, across and down: -0.42 and
    0.07 for white noise (the filter's own shape, after trimming), nearer 0 the coarser the
    grain. Over the pairs whose both values are among the ``TRIM`` smallest, so that edges,
    whose residuals are large, do not count: on a grey dial world whose scenes dominate the
    ratios of sigmas (1.27 where the noise alone gives 0.5), these still told its grain."""
    limit = residual.detach().abs().flatten().kthvalue(max(1, int(TRIM * residual.numel()))).values
    pairs = []
    for dim in (2, 3):
        first, second = residual.narrow(dim, 0, residual.shape[dim] - lag), residual.narrow(dim, lag, residual.shape[dim] - lag)
        kept = (first.abs() <= limit) & (second.abs() <= limit)
        pairs.append((first * second)[kept].mean() / ((first.square() + second.square()) / 2)[kept].mean().clamp(min=1e-12))
    return torch.stack(pairs).mean()


def colour_share(residual: torch.Tensor) -> torch.Tensor:
    """How much of the noise differs between channels: 1 where the channels' noise is
    independent, 0 where it is one grey noise (no log: grey frames' difference is exactly 0)."""
    differences = trimmed_sigma(residual[:, :2] - residual[:, 1:])  # independent: sqrt 2 sigma
    grey = trimmed_sigma(residual.mean(1)) * 6 ** 0.5  # independent: sigma / sqrt 3, times sqrt 6
    return 2 * differences / (differences + grey)


def mismatch(refined01: torch.Tensor, target: Statistics) -> torch.Tensor:
    """The mean squared difference of ``statistics`` between refined images and the real
    pool's (``target``): over the levels both have, plus over the shape's. The two count alike:
    else a grain that sharpens the noise reads as more of it to the levels' four bins a channel,
    and stood in for it (-0.66 on white noise)."""
    refined = statistics(refined01)
    both = refined.weights * target.weights
    levels = (both * (refined.levels - target.levels).square()).sum() / both.sum().clamp(min=1)
    return levels + (refined.shape - target.shape).square().mean()


# Gaussian noise's trimmed sigma over its sigma: the root mean square of the 80% smallest |x| of a
# standard normal (its 80% quantile z = 1.2816: (0.8 - 2 z phi(z)) / 0.8, square-rooted)
TRIMMED_GAUSSIAN = 0.6616


def noise_levels(target: Statistics) -> tuple[float, float]:
    """(sigma in black, sigma in white), in [0, 1] units, of white noise whose variance is linear
    in the brightness and would give the noise levels of ``statistics``' ``target``: a
    least-squares fit over the bins, each at its middle. Where the camera's noise starts: the
    statistics then correct it for the grain and the JPEG (which hide noise)."""
    levels = target.levels.view(-1, len(BRIGHTNESS_EDGES) - 1)
    used = target.weights.view_as(levels)
    variances = ((levels.exp() / TRIMMED_GAUSSIAN) ** 2 * used).sum(0) / used.sum(0).clamp(min=1)
    seen = used.sum(0) > 0
    floor = (0.5 / 255) ** 2  # half a level: no noise reads as a little, not as none (a log of 0)
    if not seen.any():
        return 0.5 / 255, 0.5 / 255
    middles = torch.tensor([(low + high) / 2 for low, high in zip(BRIGHTNESS_EDGES, BRIGHTNESS_EDGES[1:])])
    design = torch.stack([torch.ones_like(middles), middles], 1)[seen].double()
    if len(design) == 1:  # one brightness: one level
        return (float(variances[seen].clamp(min=floor).sqrt()),) * 2
    offset, slope = torch.linalg.lstsq(design, variances[seen].double().view(-1, 1)).solution.view(-1)
    return float(offset.clamp(min=floor).sqrt()), float((offset + slope).clamp(min=floor).sqrt())


@torch.no_grad()
def pool_statistics(real01: torch.Tensor, sample: int = 1024) -> Statistics:
    """The real pool's ``statistics``, on an evenly spread sample of at most ``sample`` images
    (no random draw: the trainer's RNG stream stays as it was)."""
    step = max(1, len(real01) // sample)
    return statistics(real01[::step][:sample])


# JPEG's standard luminance table (ITU T.81, Annex K), which libjpeg scales by the quality
LUMINANCE_TABLE = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]])
# the low AC frequencies: most often non-zero. Not the DC: a flat block's is a multiple of 8 anyway
FREQUENCIES = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2), (2, 1), (0, 3), (3, 0))
ROUNDING = 1.0  # how far a decoded coefficient may sit from its step's multiple (pixel rounding: ~0.2)
READ = 0.5  # the evidence (0: as random, 1: every coefficient on the grid) that reads a frame's quality
TOLERANCE = 0.2  # a coarser grid within this much evidence of the best fits as well (0 misread of 400 at 0.2-0.4)
JPEG_SHARE = 0.5  # frames read as JPEG that make the camera model code JPEG


def quality_tables() -> np.ndarray:
    """100 x len(FREQUENCIES): libjpeg's quantization steps at qualities 1..100."""
    qualities = np.arange(1, 101)[:, None]
    scale = np.where(qualities < 50, 5000 / qualities, 200 - 2 * qualities)
    table = np.array([LUMINANCE_TABLE[u, v] for u, v in FREQUENCIES])[None]
    return np.clip(np.floor((table * scale + 50) / 100), 1, 255)


def frame_quality(image01: np.ndarray) -> float:
    """The JPEG quality a decoded frame (H x W or H x W x 3 in [0, 1]) was saved at, read off its
    8x8 blocks' DCT coefficients, which JPEG left on multiples of its quantization steps; NaN
    where they sit on no quality's grid (never JPEG-coded, resized or cropped since, or so high a
    quality, about 85 and up, that its steps are within the pixels' rounding)."""
    from scipy.fft import dctn
    pixels = image01 * 255
    luminance = pixels @ np.array([0.299, 0.587, 0.114]) if pixels.ndim == 3 else pixels
    height, width = (luminance.shape[0] // 8) * 8, (luminance.shape[1] // 8) * 8
    blocks = (luminance[:height, :width] - 128).reshape(height // 8, 8, width // 8, 8).swapaxes(1, 2).reshape(-1, 8, 8)
    dct = dctn(blocks, axes=(1, 2), norm="ortho")  # JPEG's DCT is the orthonormal one
    coefficients = np.stack([dct[:, u, v] for u, v in FREQUENCIES], 1)[None]  # 1 x blocks x frequencies
    steps = quality_tables()[:, None]  # 100 x 1 x frequencies
    # a coefficient tests a quality where it is not zero and its step is well above the rounding
    testable = (np.abs(coefficients) > ROUNDING) & (steps > 4 * ROUNDING)
    on_grid = np.abs(coefficients - steps * np.round(coefficients / steps)) < ROUNDING
    chance = 2 * ROUNDING / steps  # a coefficient off any grid lands this close to a multiple by luck
    count = testable.sum((1, 2))
    evidence = ((on_grid & testable).sum((1, 2)) - (chance * testable).sum((1, 2))) / \
        np.maximum((testable * (1 - chance)).sum((1, 2)), 1e-9)
    evidence = np.where(count >= 10, evidence, -np.inf)
    best = evidence.max()
    if best < READ:
        return float("nan")
    # a quality's divisors (finer steps) fit as well: the coarsest grid that fits is the one
    return float(np.flatnonzero(evidence >= best - TOLERANCE).min() + 1)


def frame_qualities(real01: np.ndarray, sample: int = 1024) -> np.ndarray | None:
    """The real pool's JPEG qualities (N x H x W (x C) in [0, 1]), read frame by frame on an
    evenly spread sample: None unless at least ``JPEG_SHARE`` of them read as JPEG. The frames
    that do not read (too high a quality) count as 100."""
    frames = real01[:: max(1, len(real01) // sample)][:sample]
    if min(frames.shape[1:3]) < 8:
        return None
    qualities = np.array([frame_quality(frame) for frame in frames])
    read = np.isfinite(qualities)
    if read.mean() < JPEG_SHARE:
        return None
    return np.where(read, qualities, 100.0)
