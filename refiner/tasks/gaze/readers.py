"""Readers of real and synthetic eye data: UnityEyes exports, MPIIGaze and plain folders of
eye images, all cropped or resized to 35 x 55 grayscale with gaze as (pitch, yaw) radians
(``angles``).

Every reader returns a ``ReadResult`` whose ``skipped`` lists each input it did not use and
why; nothing is dropped silently.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from refiner.errors import DatasetError
from refiner.tasks.world import read_summary
from refiner.tasks.gaze.angles import EYE_SIZE, mpiigaze_vector_to_pitch_yaw, unityeyes_look_to_pitch_yaw

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class ReadResult:
    ids: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)   # uint8, EYE_SIZE
    gaze: list[tuple[float, float]] = field(default_factory=list)  # (pitch, yaw); empty when unlabelled
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)

    def summary(self, source: str) -> str:
        return read_summary(source, len(self.ids), self.skipped)

    def arrays(self):
        images = np.stack(self.images) if self.images else np.zeros((0, *EYE_SIZE), np.uint8)
        gaze = np.asarray(self.gaze, np.float32).reshape(-1, 2) if self.gaze else None
        return np.asarray(self.ids, dtype=object), images, gaze


def to_eye_image(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize(EYE_SIZE[::-1], Image.Resampling.BILINEAR), np.uint8)


def as_uint8(pixels: np.ndarray) -> np.ndarray:
    """An image array of any numeric type -> uint8: floats in [0, 1] are scaled by 255 (a
    plain cast would make them black), floats or integers in [0, 255] are kept; anything
    else is a ValueError naming the range."""
    pixels = np.asarray(pixels)
    if pixels.dtype == np.uint8:
        return pixels
    if not np.issubdtype(pixels.dtype, np.number) or not np.isfinite(pixels).all():
        raise ValueError(f"image of type {pixels.dtype} with non-numeric or non-finite pixels")
    low, high = float(pixels.min()), float(pixels.max())
    if np.issubdtype(pixels.dtype, np.floating) and low >= 0 and high <= 1:
        return np.rint(pixels * 255).astype(np.uint8)
    if low >= 0 and high <= 255:
        return np.rint(pixels).astype(np.uint8)
    raise ValueError(f"{pixels.dtype} pixels range {low:g}..{high:g}, expected 0..1 or 0..255")


def _parse_tuple(text) -> tuple[float, ...]:
    """UnityEyes writes vectors as strings such as "(0.1, -0.2, 0.97, 0.0)"."""
    values = ast.literal_eval(text) if isinstance(text, str) else text
    return tuple(float(v) for v in values)


def _head_pose_deg(text) -> tuple[float, float]:
    """UnityEyes' head_pose (pitch, yaw, roll in degrees, 0..360, yaw about 180 when
    frontal) -> (pitch, yaw) centred on 0."""
    pitch, yaw = _parse_tuple(text)[:2]
    return (pitch - 360.0 if pitch > 180.0 else pitch), yaw - 180.0


def unityeyes_crop_box(margin_xy: np.ndarray, crop_scale: float) -> tuple[float, float, float, float]:
    """A 35:55 box centred on the eyelid margin, ``crop_scale`` times the eye's width."""
    centre = margin_xy.mean(0)
    width = crop_scale * (margin_xy[:, 0].max() - margin_xy[:, 0].min())
    height = width * EYE_SIZE[0] / EYE_SIZE[1]
    return centre[0] - width / 2, centre[1] - height / 2, centre[0] + width / 2, centre[1] + height / 2


def read_unityeyes(folder: Path, max_head_pose_deg: float = 30.0, crop_scale: float = 1.5) -> ReadResult:
    """A UnityEyes export (``N.jpg`` + ``N.json``): eye crops and gaze labels, keeping only
    heads within ``max_head_pose_deg`` of frontal in pitch and yaw."""
    result = ReadResult()
    for json_path in sorted(Path(folder).glob("*.json"), key=lambda p: (len(p.stem), p.stem)):
        image_path = json_path.with_suffix(".jpg")
        try:
            record = json.loads(json_path.read_text())
            margin = np.array([_parse_tuple(p)[:2] for p in record["interior_margin_2d"]])
            _ = [_parse_tuple(p) for p in record["iris_2d"]]  # required by the format; malformed is an error
            gaze = unityeyes_look_to_pitch_yaw(_parse_tuple(record["eye_details"]["look_vec"]))
            head_pitch, head_yaw = _head_pose_deg(record["head_pose"])
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            result.skipped.append((str(json_path), f"bad JSON: {error}"))
            continue
        except KeyError as error:
            result.skipped.append((str(json_path), f"missing key {error}"))
            continue
        except (ValueError, SyntaxError, TypeError, IndexError) as error:
            result.skipped.append((str(json_path), f"malformed value: {error}"))
            continue
        if max(abs(head_pitch), abs(head_yaw)) > max_head_pose_deg:
            result.skipped.append((str(json_path), f"head pose ({head_pitch:.0f}, {head_yaw:.0f}) deg beyond "
                                                   f"max_head_pose_deg={max_head_pose_deg}"))
            continue
        try:
            with Image.open(image_path) as image:
                margin[:, 1] = image.height - margin[:, 1]  # UnityEyes' y counts from the bottom
                eye = to_eye_image(image.crop(tuple(round(v) for v in unityeyes_crop_box(margin, crop_scale))))
        except (FileNotFoundError, UnidentifiedImageError, OSError) as error:
            result.skipped.append((str(image_path), f"unreadable image: {error}"))
            continue
        result.ids.append(f"unityeyes-{json_path.stem}")
        result.images.append(eye)
        result.gaze.append(gaze)
    return result


def read_mpiigaze(root: Path, flip_right: bool = True) -> ReadResult:
    """MPIIGaze ``Data/Normalized/pXX/dayYY.mat`` (``data.left/right.image``, ``.gaze``,
    ``.pose``): real eyes with gaze labels (for evaluation only). Right eyes are mirrored to
    look like left eyes (yaw negated) unless ``flip_right`` is false."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError
    result = ReadResult()
    files = sorted(Path(root).glob("Data/Normalized/p*/day*.mat"))
    if not files:
        raise DatasetError(f"{root}: no Data/Normalized/pXX/dayYY.mat files (is this the MPIIGaze root?)")
    for path in files:
        try:
            data = loadmat(path, squeeze_me=False, struct_as_record=False)["data"][0, 0]
            sides = {side: getattr(data, side)[0, 0] for side in ("left", "right")}
            arrays = {side: (np.asarray(s.image), np.asarray(s.gaze, np.float64)) for side, s in sides.items()}
        except KeyError as error:
            result.skipped.append((str(path), f"missing key {error}"))
            continue
        except AttributeError as error:
            result.skipped.append((str(path), f"missing field: {error}"))
            continue
        except (MatReadError, ValueError, OSError, IndexError, TypeError) as error:
            result.skipped.append((str(path), f"unreadable .mat: {error}"))
            continue
        for side, (images, gaze) in arrays.items():
            if images.ndim == 2:
                images = images[None]
            gaze = gaze.reshape(-1, 3)
            if len(images) != len(gaze):
                result.skipped.append((f"{path}:{side}", f"{len(images)} images but {len(gaze)} gaze vectors"))
                continue
            for index, (image, vector) in enumerate(zip(images, gaze)):
                try:
                    pitch, yaw = mpiigaze_vector_to_pitch_yaw(vector)
                    eye = to_eye_image(Image.fromarray(as_uint8(image)))
                except ValueError as error:
                    result.skipped.append((f"{path}:{side}[{index}]", str(error)))
                    continue
                if side == "right" and flip_right:
                    eye, yaw = eye[:, ::-1].copy(), -yaw
                result.ids.append(f"mpiigaze-{path.parent.name}-{path.stem}-{side}-{index:04d}")
                result.images.append(eye)
                result.gaze.append((pitch, yaw))
    return result


def read_image_folder(folder: Path) -> ReadResult:
    """Unlabelled real eye images (png/jpg, any size), resized to 35 x 55 grayscale."""
    result = ReadResult()
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    for path in paths:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            result.skipped.append((str(path), f"not an image ({', '.join(IMAGE_SUFFIXES)})"))
            continue
        try:
            with Image.open(path) as image:
                eye = to_eye_image(image)
        except (UnidentifiedImageError, OSError) as error:
            result.skipped.append((str(path), f"unreadable image: {error}"))
            continue
        result.ids.append(f"folder-{path.relative_to(folder).as_posix()}")
        result.images.append(eye)
    return result
