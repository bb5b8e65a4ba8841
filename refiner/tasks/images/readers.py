"""Reading a user's images: a folder of images plus a labels table keyed by file name, an
existing Parquet or Hugging Face ``datasets`` directory, or a folder of unlabelled images.
Every image is made one size and one colour mode (``Preprocess``), and geometric labels
(keypoints, boxes, masks) move with it.

Label kinds, as ``images.labels`` in params.yaml spells them:

    class          an integer class (0..N-1)
    float          one float
    vector[K]      K floats
    keypoints[K]   K floats, x,y pairs in pixels of the image (moved with resize and crop)
    box            4 floats, x0,y0,x1,y1 in pixels (moved with resize and crop)
    mask           a mask image's file name (relative to the labels file), resized nearest

Every reader returns a ``Read`` whose ``skipped`` lists each input it did not use and why;
nothing is dropped silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from refiner.data import IMAGE_TYPE, MANIFEST, DatasetError, decode_image_column_uint8, encode_png
from refiner.tasks.images.pixels import (IMAGE_SUFFIXES, Preprocess, common_color, common_size, list_images, load_image,
                                         move_points, sized)
from refiner.tasks.world import read_summary

KIND = re.compile(r"^(class|float|box|mask|keypoints\[(\d+)\]|vector\[(\d+)\])$")
GEOMETRIC_NAMES = {"keypoints": ("keypoint", "landmark", "kp"), "box": ("box",)}


def kind_length(kind: str) -> int | None:
    """Floats per row of a list kind; None for class, float and mask."""
    match = KIND.match(kind)
    if not match:
        raise ValueError(f"unknown label kind {kind!r}: one of class, float, box, mask, keypoints[K], vector[K]")
    if kind == "box":
        return 4
    size = match.group(2) or match.group(3)
    return int(size) if size else None


def arrow_type(kind: str) -> pa.DataType:
    """How the dataset contract stores a label kind."""
    length = kind_length(kind)
    if length:
        return pa.list_(pa.float32(), length)
    return {"class": pa.int64(), "float": pa.float32(), "mask": IMAGE_TYPE}[kind]


@dataclass
class Read:
    ids: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)              # uint8, one shape
    labels: dict[str, list] = field(default_factory=dict)               # name -> one value per image
    skipped: list[tuple[str, str]] = field(default_factory=list)        # (what, why)

    def summary(self, source: str) -> str:
        return read_summary(source, len(self.ids), self.skipped)

    def arrays(self, kinds: dict[str, str]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        labels = {}
        for name, kind in kinds.items():
            values = self.labels.get(name, [])
            labels[name] = (np.array(values, dtype=object) if kind == "mask" else
                            np.asarray(values, np.int64) if kind == "class" else
                            np.asarray(values, np.float32).reshape(len(values), *([kind_length(kind)] if kind_length(kind) else [])))
        return np.asarray(self.ids, dtype=object), np.stack(self.images), labels


# ---------------------------------------------------------------- label tables

def read_label_table(path: Path) -> pd.DataFrame:
    """A labels file: CSV, JSON Lines or Parquet."""
    readers = {".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True), ".parquet": pd.read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DatasetError(f"{path}: labels must be .csv, .jsonl or .parquet")
    try:
        return reader(path)
    except Exception as err:
        raise DatasetError(f"{path}: not a readable labels file ({type(err).__name__}: {err})") from err


def as_floats(value) -> list[float] | None:
    """A float or list cell as CSV (a JSON text), JSON Lines (a list) or Parquet (an array) holds it."""
    if isinstance(value, str):
        value = json.loads(value)
    return None if value is None else [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]


def infer_kinds(frame: pd.DataFrame, key: str, source) -> dict[str, str]:
    """Each label column's kind from its values and name (printed; pin it in params to override)."""
    kinds = {}
    for name in frame.columns:
        if name == key:
            continue
        values = frame[name].dropna()
        if values.empty:
            raise DatasetError(f"{source}: label column {name!r} has no values")
        first = values.iloc[0]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_integer_dtype(values):
            kinds[name] = "class"
        elif pd.api.types.is_float_dtype(values):
            kinds[name] = "float"
        elif isinstance(first, str) and "mask" in name.lower() and not first.lstrip().startswith("["):
            kinds[name] = "mask"
        else:
            try:
                lengths = values.map(lambda v: len(as_floats(v)))
            except (ValueError, TypeError) as err:
                raise DatasetError(f"{source}: label column {name!r}: cannot tell its kind from {first!r} ({err}); "
                                   "pin it in images.label_kinds") from None
            length = int(lengths.mode().iloc[0])
            lowered = name.lower()
            if any(word in lowered for word in GEOMETRIC_NAMES["box"]) and length == 4:
                kinds[name] = "box"
            elif any(word in lowered for word in GEOMETRIC_NAMES["keypoints"]) and length % 2 == 0:
                kinds[name] = f"keypoints[{length}]"
            else:
                kinds[name] = f"vector[{length}]"
    if not kinds:
        raise DatasetError(f"{source}: no label columns besides {key!r}")
    return kinds


def _label_value(value, kind: str):
    """One cell as the kind's value, or a ValueError saying what is wrong with it."""
    if value is None or (np.isscalar(value) and pd.isna(value)):
        raise ValueError("missing")
    if kind == "class":
        if float(value) != int(float(value)):
            raise ValueError(f"{value!r} is not an integer class")
        return int(float(value))
    if kind == "float":
        return float(value)
    if kind == "mask":
        return str(value)
    values = as_floats(value)
    if len(values) != kind_length(kind):
        raise ValueError(f"wrong list length ({len(values)}, expected {kind_length(kind)})")
    return values


# ---------------------------------------------------------------- images

def _mask_file(name: str, folder: Path | None) -> Path:
    """A mask's file, named relative to the labels file (or table) that names it, and inside its folder."""
    if folder is not None and (folder / name).is_file():
        if not (folder / name).resolve().is_relative_to(folder.resolve()):
            raise ValueError(f"mask {name!r} resolves to {(folder / name).resolve()}, outside {folder}")
        return folder / name
    raise ValueError(f"no mask file {name!r}" + (f" in {folder}" if folder else ""))


def assemble(frame: pd.DataFrame | None, key: str, sources: dict[str, object], kinds: dict[str, str],
             pre: Preprocess, origin: str, folder: Path | None = None) -> tuple[Read, Preprocess]:
    """Match label rows to images by ``key``, load and fit each image, move its geometric
    labels. ``frame`` None: unlabelled images; ``folder``: where mask file names start. Returns what was read and the preprocessing
    with its size fixed (the first image's when unset)."""
    read = Read(labels={name: [] for name in kinds})
    if frame is None:
        rows = {name: {} for name in sources}
    else:
        if key not in frame.columns:
            raise DatasetError(f"{origin}: no column {key!r} naming each row's image (has {list(frame.columns)}); "
                               "set images.key")
        missing = [name for name in kinds if name not in frame.columns]
        if missing:
            raise DatasetError(f"{origin}: no label column(s) {missing} (has {list(frame.columns)})")
        rows = {}
        for record in frame.to_dict("records"):
            name = str(record[key])
            if name in rows:
                read.skipped.append((name, "repeated label row (kept the first)"))
            elif name not in sources:
                read.skipped.append((name, "label row without an image"))
            else:
                rows[name] = record
        read.skipped += [(name, "image without a label row") for name in sources if name not in rows]
    for name, record in rows.items():
        values, problem = {}, None
        for label, kind in kinds.items():
            try:
                values[label] = _label_value(record[label], kind)
            except (ValueError, TypeError) as err:
                problem = f"label {label!r}: {err}"
                break
        if problem:
            read.skipped.append((name, problem))
            continue
        try:
            pixels, box, size = load_image(sources[name], pre)
            for label, kind in kinds.items():
                if kind == "mask":
                    mask, _, _ = load_image(_mask_file(values[label], folder), Preprocess(size, pre.fit, pre.color),
                                            "L", Image.Resampling.NEAREST)
                    values[label] = encode_png(mask)
                elif kind == "box" or kind.startswith("keypoints"):
                    values[label] = move_points(values[label], box, size)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            read.skipped.append((name, f"unreadable image or mask: {err}"))
            continue
        pre = Preprocess(size, pre.fit, pre.color, pre.common)
        read.ids.append(name)
        read.images.append(pixels)
        for label, value in values.items():
            read.labels[label].append(value)
    return read, pre


# ---------------------------------------------------------------- sources

def table_source(path: Path, with_images: bool = True) -> tuple[pd.DataFrame, dict[str, bytes]] | None:
    """A Parquet directory or file, or a Hugging Face ``save_to_disk`` directory, with an
    ``image`` column (``{bytes, path}`` structs or bytes): (labels with a ``file`` key, images
    by key). None when ``path`` is neither. ``with_images`` False: the labels only, without
    reading a Parquet source's image bytes (every stage reads the labels; only render the images)."""
    files = [path] if path.is_file() and path.suffix == ".parquet" else \
        sorted(path.glob("*.parquet")) if path.is_dir() else []
    if files:
        names = pq.read_schema(files[0]).names
        table = pq.read_table(files, columns=None if with_images or "image" not in names else
                              [name for name in names if name != "image"])
    elif path.is_dir() and (path / "state.json").is_file() and any(path.glob("*.arrow")):
        table = pa.concat_tables([pa.ipc.open_stream(pa.memory_map(str(f))).read_all()
                                  for f in sorted(path.glob("*.arrow"))])
        names = table.column_names
    else:
        return None
    if "image" not in names:
        raise DatasetError(f"{path}: a table of images needs an 'image' column (has {names})")
    keys = (table.column("id").to_pylist() if "id" in table.column_names else
            [f"row-{i:07d}" for i in range(table.num_rows)])
    keys = [str(k) for k in keys]
    frame = table.drop_columns([c for c in ("image", "id", "source") if c in table.column_names]).to_pandas()
    frame.insert(0, "file", keys)
    if not with_images:
        return frame, {}
    images = table.column("image").combine_chunks()
    if pa.types.is_struct(images.type):
        return frame, dict(zip(keys, image_bytes(images, path).to_pylist()))
    image_bytes(images, path)  # refuses strings
    manifest = path / MANIFEST if path.is_dir() else path.parent / MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()).get("image_encoding") == "raw":
        # a simrefinery dataset with raw pixels: PNG bytes, as every other source gives
        pixels = decode_image_column_uint8(table, str(path), json.loads(manifest.read_text())["image_shape"])
        return frame, dict(zip(keys, map(encode_png, pixels)))
    return frame, dict(zip(keys, images.to_pylist()))


def image_bytes(images: pa.Array, where) -> pa.Array:
    """A table's ``image`` column as image bytes: a Hugging Face ``{bytes, path}`` struct's
    bytes (a row with a path alone is unreadable, and skipped as such), or bytes as they are.
    Strings are refused: opened as file paths they would read any file on the machine."""
    images = images.field("bytes") if pa.types.is_struct(images.type) else images
    if not (pa.types.is_binary(images.type) or pa.types.is_large_binary(images.type) or pa.types.is_null(images.type)):
        raise DatasetError(f"{where}: its image column holds {images.type}, not image bytes (PNG, JPEG, ...); "
                           "file paths are not followed")
    return images


def read_labelled(images: Path, labels: Path | None, key: str, kinds: dict[str, str] | None,
                  pre: Preprocess) -> tuple[Read, dict[str, str], Preprocess]:
    """Labelled images: a folder plus a labels file, or a table directory. ``kinds`` None:
    inferred. Returns (what was read, the kinds, the preprocessing with its size fixed)."""
    table = table_source(images)
    if table is not None:
        frame, sources, key, origin = *table, "file", str(images)
        folder = images if images.is_dir() else images.parent
    else:
        if not images.is_dir():
            raise DatasetError(f"{images}: not a folder of images, a Parquet dataset or a Hugging Face dataset")
        if labels is None:
            raise DatasetError(f"{images}: a folder of images needs a labels file (images.labels)")
        frame, sources, folder, origin = read_label_table(labels), list_images(images), labels.parent, str(labels)
    kinds = kinds or infer_kinds(frame, key, origin)
    read, pre = assemble(frame, key, sources, kinds, sized(pre, sources), origin, folder)
    print(read.summary(f"{images}" + (f" + {labels}" if table is None else "")))
    if not read.ids:
        raise DatasetError(f"{images}: no usable labelled images (see the skipped list above)")
    return read, kinds, pre


def first_image_size(images: Path, pre: Preprocess) -> tuple[int, int]:
    """The size ``read_labelled`` gives every image of ``images`` when ``pre.size`` is unset:
    the most common among them (a stray 1x1 image does not set a world's size)."""
    table = table_source(images)
    size = common_size(table[1] if table is not None else list_images(images))
    if size is None:
        raise DatasetError(f"{images}: no readable image")
    return size


def images_color(images: Path) -> str | None:
    """The colour mode of a folder or table of images (``pixels.common_color``)."""
    table = table_source(images)
    return common_color(table[1] if table is not None else list_images(images))


def read_unlabelled(images: Path, pre: Preprocess) -> Read:
    if not images.is_dir():
        raise DatasetError(f"{images}: not a folder of images")
    sources = list_images(images)
    read, _ = assemble(None, "", sources, {}, sized(pre, sources), str(images))
    unused = sorted(p.relative_to(images).as_posix() for p in images.rglob("*")
                    if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES)
    read.skipped += [(name, f"not an image ({', '.join(IMAGE_SUFFIXES)})") for name in unused]
    print(read.summary(str(images)))
    if not read.ids:
        raise DatasetError(f"{images}: no usable images (see the skipped list above)")
    return read
