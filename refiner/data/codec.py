"""Pixels <-> the image column: PNG bytes in the Hugging Face ``Image`` struct, or raw
row-major uint8 bytes (one contiguous buffer per part, no decoder at all)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from refiner.data.schema import IMAGE_TYPE, RAW_TYPE, check_encoding
from refiner.errors import DatasetError

PNG_MODES = {2: "L", 3: "RGB"}  # array dimensions -> PIL mode: H x W grayscale, H x W x 3 colour


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 H x W (grayscale) or H x W x 3 (RGB) array -> PNG bytes (compress_level fixed so
    bytes are reproducible)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim not in PNG_MODES or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"an image is H x W or H x W x 3, got shape {pixels.shape}")
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=PNG_MODES[pixels.ndim]).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 H x W (mode L) or H x W x 3 (mode RGB); refuses every other mode
    (alpha, palette, 16-bit): a silent conversion would hide what the source really holds."""
    with Image.open(io.BytesIO(data)) as image:
        if image.mode not in PNG_MODES.values():
            raise ValueError(f"PNG mode {image.mode}, the contract holds 8-bit grayscale (L) or RGB")
        return np.asarray(image, dtype=np.uint8)


def channels(image_shape) -> int:
    """1 for an H x W shape, C for H x W x C."""
    return 1 if len(image_shape) == 2 else int(image_shape[2])


def shape_text(shape) -> str:
    return "x".join(str(n) for n in shape)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] -> uint8, rounding to the nearest of 256 levels."""
    return np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def image_column(images_uint8: np.ndarray, image_encoding: str = "png") -> pa.Array:
    if check_encoding(image_encoding) == "raw":
        return raw_column(images_uint8)
    return pa.array([{"bytes": encode_png(img), "path": None} for img in images_uint8],
                    type=IMAGE_TYPE)


def raw_column(images_uint8: np.ndarray) -> pa.Array:
    """N images -> one ``large_binary`` cell each, built on the pixels' buffer (no per-image copy)."""
    images = np.ascontiguousarray(images_uint8, dtype=np.uint8)
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
        raise ValueError(f"images are N x H x W or N x H x W x 3, got shape {images.shape}")
    size = int(np.prod(images.shape[1:]))
    offsets = np.arange(len(images) + 1, dtype=np.int64) * size
    return pa.Array.from_buffers(RAW_TYPE, len(images), [None, pa.py_buffer(offsets), pa.py_buffer(images)])


def decode_raw_column(table: pa.Table, file_name: str, shape: list[int] | None) -> np.ndarray:
    """A raw image column -> uint8 N x H x W (x C): one view of the part's buffer when every
    cell holds exactly one image of ``shape``."""
    if shape is None:
        raise DatasetError(f"{file_name}: raw images need the dataset's image_shape to be read")
    column = table.column("image").combine_chunks().cast(RAW_TYPE)
    lengths = pc.binary_length(column).to_numpy(zero_copy_only=False)
    size = int(np.prod(shape))
    wrong = lengths != size  # a null cell's length is NaN: wrong too, at its own row
    if wrong.any():
        ids = table.column("id").to_pylist()
        row = int(np.flatnonzero(wrong)[0])
        problem = "image is missing" if column[row].as_py() is None else f"image holds {int(lengths[row])} bytes"
        raise DatasetError(f"{file_name}: row id={ids[row]!r}: {problem}, the dataset's {shape_text(shape)} images "
                           f"take {size}")
    offsets = np.frombuffer(column.buffers()[1], np.int64, len(column) + 1, column.offset * 8)
    pixels = np.frombuffer(column.buffers()[2], np.uint8, offsets[-1] - offsets[0], offsets[0])
    return pixels.reshape(len(column), *shape)


def is_raw(table: pa.Table) -> bool:
    return pa.types.is_binary(table.schema.field("image").type) or pa.types.is_large_binary(table.schema.field("image").type)


def decode_image_column(table: pa.Table, file_name: str = "<memory>", shape: list[int] | None = None) -> np.ndarray:
    """The image column of a table (either encoding) -> float32 N x H x W (x 3) in [0, 1].
    Every image must have ``shape`` (default for PNG: the first image's; raw needs it)."""
    return decode_image_column_uint8(table, file_name, shape).astype(np.float32) / 255.0


def decode_image_column_uint8(table: pa.Table, file_name: str = "<memory>", shape: list[int] | None = None) -> np.ndarray:
    if is_raw(table):
        return decode_raw_column(table, file_name, shape)
    ids = table.column("id").to_pylist()
    images = []
    for row_id, cell in zip(ids, table.column("image").combine_chunks().field("bytes").to_pylist()):
        try:
            pixels = decode_png(cell)
        except Exception as err:  # PIL raises several types for corrupt bytes
            raise DatasetError(f"{file_name}: row id={row_id!r}: image is not a readable PNG ({err})") from err
        shape = shape or list(pixels.shape)
        if list(pixels.shape) != list(shape):
            raise DatasetError(f"{file_name}: row id={row_id!r}: image is {shape_text(pixels.shape)}, "
                               f"the dataset's images are {shape_text(shape)}")
        images.append(pixels)
    if not images:
        return np.zeros((0, 0, 0), dtype=np.uint8)
    return np.stack(images)

