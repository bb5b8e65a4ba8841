"""One image in: its pixels at the world's size and colour mode, and the box of the source
that became them (``load_image``); a folder's images (``list_images``, never leaving the
folder) and their most common size (``sized``). What the contract refuses (16-bit, a
decompression bomb, an image far from the common size) raises ``ValueError``: the readers
skip and report it."""

from __future__ import annotations

import io
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class Preprocess:
    size: tuple[int, int] | None   # (height, width); None: the most common size among the images
    fit: str                       # "resize" (stretch) or "crop" (centre-crop to the aspect, then resize)
    color: str                     # "rgb" or "gray"
    common: bool = False           # size is the most common one: an image far from it is skipped, not stretched


FAR = 4.0  # an image over 4x larger or smaller than the common size, in either side, is not of this world


def list_images(folder: Path) -> dict[str, Path | ValueError]:
    """Image files under ``folder`` (recursively), keyed by their path relative to it; a link
    that resolves outside the folder, and a linked folder (not followed: it was skipped without
    a word), are listed as the refusal ``load_image`` raises for them."""
    inside = folder.resolve()
    found = {p.relative_to(folder).as_posix(): p if p.resolve().is_relative_to(inside) else
             ValueError(f"a link to {p.resolve()}, outside {folder}")
             for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    return found | {f"{p.relative_to(folder).as_posix()}/": ValueError(f"a linked folder ({p.resolve()}): not followed; "
                                                                       "copy its images in, or link each file")
                    for p in sorted(folder.rglob("*")) if p.is_symlink() and p.is_dir()}


def fit_box(width: int, height: int, pre: Preprocess) -> tuple[float, float, float, float]:
    """The region of a width x height image that becomes the output: all of it (resize) or the
    centred region of the output's aspect ratio (crop)."""
    out_h, out_w = pre.size
    if pre.fit == "resize":
        return 0.0, 0.0, float(width), float(height)
    aspect = out_w / out_h
    crop_w, crop_h = (height * aspect, float(height)) if width / height > aspect else (float(width), width / aspect)
    left, top = (width - crop_w) / 2, (height - crop_h) / 2
    return left, top, left + crop_w, top + crop_h


def move_points(values: list[float], box, size) -> list[float]:
    """x,y pairs in the source image's pixels -> the output's pixels."""
    left, top, right, bottom = box
    out_h, out_w = size
    scale_x, scale_y = out_w / (right - left), out_h / (bottom - top)
    points = np.asarray(values, np.float64).reshape(-1, 2)
    return (np.c_[(points[:, 0] - left) * scale_x, (points[:, 1] - top) * scale_y]).reshape(-1).tolist()


HIGH_DEPTH_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")  # what an 8-bit conversion would clip


def open_image(source) -> Image.Image:
    """Pillow's open (the header only) of a path or image bytes. Its decompression-bomb warning,
    which names no file, is silenced: ``load_image`` refuses such an image, naming it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def load_image(source, pre: Preprocess, mode: str | None = None, resample=Image.Resampling.BILINEAR):
    """(uint8 pixels, the box of the source that became them, the source's width and height).
    ``source``: a path or image bytes. 16-bit and float images are refused (an 8-bit
    conversion clips them to white), as is an image over Pillow's decompression-bomb limit;
    palette and alpha images are converted (the alpha dropped), as docs/your-own-world.md says."""
    if isinstance(source, ValueError):  # list_images' refusal (a link out of the folder)
        raise source
    with open_image(source) as image:
        if image.width * image.height > Image.MAX_IMAGE_PIXELS:
            raise ValueError(f"{image.width}x{image.height} pixels, over Pillow's decompression-bomb limit of "
                             f"{Image.MAX_IMAGE_PIXELS} (PIL.Image.MAX_IMAGE_PIXELS)")
        if image.mode in HIGH_DEPTH_MODES:
            raise ValueError(f"a {image.mode} image (16-bit or float): the contract takes 8-bit images; convert it")
        size = pre.size or (image.height, image.width)
        ratios = (image.height / size[0], image.width / size[1])
        if pre.common and mode is None and (max(ratios) > FAR or min(ratios) < 1 / FAR):
            raise ValueError(f"{image.width}x{image.height} pixels, far from the {size[1]}x{size[0]} most of the "
                             "images have (set the size, --size H W, to keep it)")
        image = image.convert(mode or ("RGB" if pre.color == "rgb" else "L"))
        box = fit_box(image.width, image.height, Preprocess(size, pre.fit, pre.color))
        pixels = np.asarray(image.resize(size[::-1], resample, box=box), np.uint8)
    return pixels, box, size


SIZE_SAMPLE = 2000  # images whose headers set the common size


def common_size(sources: dict) -> tuple[int, int] | None:
    """The most common (height, width) among the first ``SIZE_SAMPLE`` readable images (headers
    only); None when none is readable."""
    sizes = Counter()
    for source in [s for s in sources.values() if not isinstance(s, ValueError)][:SIZE_SAMPLE]:
        try:
            with open_image(source) as image:
                sizes[(image.height, image.width)] += 1
        except (UnidentifiedImageError, OSError, ValueError, TypeError, Image.DecompressionBombError):
            continue
    return sizes.most_common(1)[0][0] if sizes else None


COLOR_SAMPLE = 64  # images whose pixels say whether a folder is grey


def is_gray(image: Image.Image) -> bool:
    """One channel, or three equal ones (only then are the pixels decoded)."""
    if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return True
    pixels = np.asarray(image.convert("RGB"))
    return np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])


def frame_shape(source) -> tuple[int, int, str] | None:
    """(height, width, "gray" or "rgb") of an image file or image bytes; None if unreadable
    (its reader skips and reports it)."""
    try:
        with open_image(source) as image:
            return image.height, image.width, "gray" if is_gray(image) else "rgb"
    except (UnidentifiedImageError, OSError, ValueError, TypeError, Image.DecompressionBombError):
        return None


def common_color(sources: dict) -> str | None:
    """"gray" when each of the first ``COLOR_SAMPLE`` readable images is grey (one channel, or
    three equal ones), else "rgb"; None when none is readable."""
    seen = 0
    for source in [s for s in sources.values() if not isinstance(s, ValueError)]:
        shape = frame_shape(source)
        if shape is None:
            continue
        if shape[2] == "rgb":
            return "rgb"
        seen += 1
        if seen == COLOR_SAMPLE:
            break
    return "gray" if seen else None


def sized(pre: Preprocess, sources: dict) -> Preprocess:
    """``pre`` with its size fixed: as given, or the images' most common size (none readable:
    unset, and every image is skipped and reported)."""
    size = pre.size or common_size(sources)
    return pre if pre.size or size is None else Preprocess(size, pre.fit, pre.color, common=True)
