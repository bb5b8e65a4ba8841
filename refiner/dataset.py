"""The image-dataset contract: every stage reads and writes datasets through this module.

A dataset is a directory of Parquet files with deterministic names (``part-00000.parquet``,
...) plus ``_manifest.json`` (row count, file hashes, schema, producer, params, upstream
digests). Its digest is the SHA-256 of the canonical manifest, so DVC, MLflow and Prefect
all name the same bytes the same way.

Columns: ``id``, ``image``, the task's label columns (their pyarrow types come from the
task's label schema and are recorded in the manifest: integers, floats, fixed-size float
lists for keypoints and boxes, image structs for masks), ``source``. The images are 8-bit,
grayscale (H x W) or RGB (H x W x 3), one shape per dataset (``image_shape`` and
``channels`` in the manifest), in one of two encodings (``image_encoding`` in the manifest;
every reader here takes both):

- ``png``: the Hugging Face ``Image`` struct (``{bytes, path}``) holding PNG bytes; pyarrow,
  pandas, Ray Data and ``datasets`` read it without project code (schema metadata tells
  ``datasets`` to decode it as an image).
- ``raw``: each cell the image's pixels as bytes, row-major (H, W, C), ``large_binary``.
  No decoder at all: a part's pixels are one contiguous buffer, about 100x faster to read
  than PNG (BENCHMARKS.md). ``np.frombuffer(cell, np.uint8).reshape(image_shape)`` in
  pandas; ``ray.data.read_parquet(..., tensor_column_schema={"image": (np.uint8, shape)})``
  gives Ray's tensor type. Hugging Face's own ``Array2D``/``Array3D`` columns were measured
  too: Parquet stores them as nested lists, which read 30x slower than these bytes.

A dataset lives in a directory or at an ``s3://`` prefix (``refiner/storage.py``; the
object-store writer commits by manifest instead of by rename: ``ObjectStoreWriter``).
Writes are atomic: files go to a hidden staging directory beside the target, which is
renamed into place only once complete, so a reader never sees a half-written dataset and
an interrupted write leaves the previous dataset (if any) untouched. One writer at a time
per target (a file lock beside it); a dataset with no rows is never committed. A writer
given a resume key keeps its finished parts across a crash, so a long job can pick up
where it stopped.

Every row is checked where it enters (``RowChecker``: ids unique and present, labels
present and in the task's range, each image a readable 8-bit grayscale or RGB PNG of
the dataset's shape), by the writer part by part and by ``validate`` file by file, so a bad record is
refused naming its file and row id before any work, and never committed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout
from PIL import Image

from refiner import storage

FORMAT = "simrefinery.imageset/1"
MANIFEST = "_manifest.json"  # leading "_": whole-directory Parquet readers skip it
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
RAW_TYPE = pa.large_binary()  # large: a part of big images may pass 2 GiB
IMAGE_ENCODINGS = ("png", "raw")


class DatasetError(ValueError):
    """A dataset (or one of its files) breaks the contract; the message names which and why."""


def _hf_feature(type_: pa.DataType) -> dict:
    """The Hugging Face ``datasets`` feature of a label column's pyarrow type."""
    if type_ == IMAGE_TYPE:  # a mask
        return {"_type": "Image"}
    if pa.types.is_fixed_size_list(type_) or pa.types.is_list(type_):
        length = type_.list_size if pa.types.is_fixed_size_list(type_) else -1
        return {"_type": "List", "feature": _hf_feature(type_.value_type), "length": length}
    dtype = {"float": "float32", "double": "float64", "halffloat": "float16"}.get(str(type_), str(type_))
    return {"dtype": dtype, "_type": "Value"}


def check_encoding(image_encoding: str) -> str:
    if image_encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"image_encoding must be one of {IMAGE_ENCODINGS}, got {image_encoding!r}")
    return image_encoding


def schema_for(label_schema: pa.Schema, image_encoding: str = "png") -> pa.Schema:
    """The contract's columns around a task's label columns."""
    raw = check_encoding(image_encoding) == "raw"
    fields = [pa.field("id", pa.string(), nullable=False), pa.field("image", RAW_TYPE if raw else IMAGE_TYPE),
              *label_schema, pa.field("source", pa.string())]
    image_feature = {"dtype": "large_binary", "_type": "Value"} if raw else {"_type": "Image"}
    hf_features = {"id": {"dtype": "string", "_type": "Value"}, "image": image_feature,
                   **{f.name: _hf_feature(f.type) for f in label_schema},
                   "source": {"dtype": "string", "_type": "Value"}}
    metadata = {b"huggingface": json.dumps({"info": {"features": hf_features}}).encode()}
    return pa.schema(fields, metadata=metadata)


def canonical_type(type_: pa.DataType) -> pa.DataType:
    """Parquet renames a list's child field ("item" -> "element"): compare types without it."""
    if pa.types.is_fixed_size_list(type_):
        return pa.list_(canonical_type(type_.value_type), type_.list_size)
    if pa.types.is_list(type_):
        return pa.list_(canonical_type(type_.value_type))
    return type_


def infer_label_schema(labels: dict[str, np.ndarray]) -> pa.Schema:
    """Label types from arrays: 1-D -> scalars, N x K -> fixed-size lists of K, PNG bytes
    (masks) -> image structs."""
    fields = []
    for name, values in labels.items():
        values = np.asarray(values)
        if values.dtype == object and len(values) and isinstance(values[0], bytes):
            fields.append((name, IMAGE_TYPE))
            continue
        scalar = pa.from_numpy_dtype(values.dtype)
        fields.append((name, pa.list_(scalar, values.shape[1]) if values.ndim == 2 else scalar))
    return pa.schema(fields)


def label_array(values, type_: pa.DataType) -> pa.Array:
    if type_ == IMAGE_TYPE:  # masks: PNG bytes per row
        return pa.array([{"bytes": v, "path": None} for v in values], IMAGE_TYPE)
    values = np.asarray(values)
    if pa.types.is_fixed_size_list(type_):
        flat = pa.array(values.reshape(-1), type_.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, type_.list_size)
    return pa.array(values, type_)


def label_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """A label column -> numpy: N values, or N x K for fixed-size lists."""
    array = column.combine_chunks()
    if pa.types.is_fixed_size_list(array.type):
        return array.flatten().to_numpy(zero_copy_only=False).reshape(len(array), array.type.list_size)
    return array.to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------- pixels <-> PNG bytes

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
    lengths = pa.compute.binary_length(column).to_numpy(zero_copy_only=False)
    size = int(np.prod(shape))
    wrong = (lengths != size) if column.null_count == 0 else np.ones(len(column), bool)
    if wrong.any():
        ids = table.column("id").to_pylist()
        row = int(np.flatnonzero(wrong)[0])
        raise DatasetError(f"{file_name}: row id={ids[row]!r}: image holds {lengths[row]} bytes, the dataset's "
                           f"{shape_text(shape)} images take {size}")
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


# A task's label check: label columns (numpy) -> {problem: mask of the rows that have it}
BadLabels = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def first_bad(file_name: str, ids: list, bad: np.ndarray, problem: str) -> DatasetError:
    rows = np.flatnonzero(bad)
    more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
    return DatasetError(f"{file_name}: row id={ids[rows[0]]!r}: {problem}{more}")


class RowChecker:
    """Checks tables part by part and remembers what spans parts: the ids seen, as 64-bit
    hashes (8 bytes a row: 8 MB for a million ids; a hash collision, about 3e-8 at a
    million rows, would refuse a good row, never pass a bad one), and the image shape.
    ``check_images``: decode every image (off only where the images were just made from
    checked ones, as refine does)."""

    def __init__(self, label_columns, bad_labels: BadLabels | None = None, image_shape: list[int] | None = None,
                 check_images: bool = True):
        self.label_columns, self.bad_labels, self.image_shape = list(label_columns), bad_labels, image_shape
        self.check_images = check_images
        self.seen = np.empty(0, np.uint64)

    def remember(self, ids: list) -> None:
        self.seen = np.union1d(self.seen, pd.util.hash_array(np.asarray(ids, dtype=object)))

    def check(self, table: pa.Table, file_name: str) -> None:
        """Raises DatasetError naming the file, the first bad row's id and the problem."""
        ids = table.column("id").to_pylist()
        if None in ids:
            raise DatasetError(f"{file_name}: row {ids.index(None)}: id is missing")
        counts = Counter(ids)
        duplicate = np.array([counts[i] > 1 for i in ids], dtype=bool)
        if ids:
            duplicate |= np.isin(pd.util.hash_array(np.asarray(ids, dtype=object)), self.seen)
        if duplicate.any():
            raise first_bad(file_name, ids, duplicate, "id is not unique")
        self.remember(ids)
        labels = {}
        for name in self.label_columns:
            column = table.column(name)
            if column.null_count:
                raise first_bad(file_name, ids, column.is_null().to_numpy(zero_copy_only=False), f"label {name!r} is missing")
            labels[name] = label_numpy(column)
        for name, values in labels.items():
            if np.issubdtype(values.dtype, np.floating):
                not_finite = ~np.isfinite(values).reshape(len(values), -1).all(1)
                if not_finite.any():
                    raise first_bad(file_name, ids, not_finite, f"label {name!r} is NaN or infinite")
        for problem, bad in (self.bad_labels(labels) if self.bad_labels and labels else {}).items():
            if np.any(bad):
                raise first_bad(file_name, ids, np.asarray(bad), problem)
        if self.check_images and table.num_rows:
            images = decode_image_column(table, file_name, self.image_shape)
            self.image_shape = list(images.shape[1:])


def make_table(ids, images_uint8: np.ndarray, labels: dict[str, np.ndarray], source: str,
               label_schema: pa.Schema | None = None, image_encoding: str = "png") -> pa.Table:
    label_schema = label_schema if label_schema is not None else infer_label_schema(labels)
    schema = schema_for(label_schema, image_encoding)
    columns = {"id": pa.array(list(ids), pa.string()), "image": image_column(images_uint8, image_encoding)}
    for field in label_schema:
        columns[field.name] = label_array(labels[field.name], field.type)
    columns["source"] = pa.array([source] * len(columns["id"]), pa.string())
    return pa.table(columns, schema=schema)


# ---------------------------------------------------------------- writing

def file_sha256(path, filesystem=None) -> str:
    """A local file's SHA-256, or an object's (``filesystem``: pyarrow's), streamed."""
    digest = hashlib.sha256()
    with (filesystem.open_input_stream(path) if filesystem else open(path, "rb")) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def manifest_digest(manifest: dict) -> str:
    return hashlib.sha256(canonical_json(manifest).encode()).hexdigest()


class DatasetWriter:
    """Writes numbered parts into a hidden staging directory; commits atomically on close.

    Use as a context manager: on an exception nothing is committed (finished parts stay
    staged when a ``resume_key`` is given, else the staging directory is removed). With a
    ``resume_key`` the staging directory is named by it, so a rerun of the same job after a
    crash or kill finds the parts already written (``has_part``) and only writes the rest.
    Each part file is itself written to a temporary name and renamed, so a staged part is
    always complete. The writer holds the target's lock from creation to commit or abort:
    a second writer is refused, and staging left beside the target can only be a dead
    writer's, so it is swept. Each part's rows are checked (``RowChecker``) before it is
    staged; ``bad_labels`` is the task's label check. ``image_encoding`` raw needs the
    ``image_shape`` (raw bytes do not say it).
    """

    def __new__(cls, path, **kwargs):
        # one way to write a dataset: an s3:// target gets the object-store writer
        return super().__new__(ObjectStoreWriter if cls is DatasetWriter and storage.is_remote(path) else cls)

    def __init__(self, path: str | Path, *, label_schema: pa.Schema, producer: str,
                 params: dict | None = None, upstream: dict[str, str] | None = None,
                 resume_key: str | None = None, bad_labels: BadLabels | None = None, check_images: bool = True,
                 image_encoding: str = "png", image_shape: list[int] | None = None):
        self.path = Path(path)
        self._contract(label_schema, producer, params, upstream, image_encoding, image_shape)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(self.path.parent / f".{self.path.name}.lock")
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise DatasetError(f"{self.path}: another process is writing this dataset (lock "
                               f"{self.lock.lock_file}); wait for it to finish or stop it") from None
        name = f".{self.path.name}.partial-{resume_key}" if resume_key else f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.tmp = self.path.parent / name
        for stale in self.path.parent.glob(f".{self.path.name}.*"):
            if stale != self.tmp and (".tmp-" in stale.name or ".partial-" in stale.name):
                if ".partial-" in stale.name and resume_key:
                    print(f"{self.path}: an interrupted job with other inputs or settings left parts; starting clean")
                shutil.rmtree(stale, ignore_errors=True)
        self.tmp.mkdir(exist_ok=True)
        for half_written in self.tmp.glob(".*.writing"):
            half_written.unlink()
        self.resume_key = resume_key
        self.rows = RowChecker(self.label_columns, bad_labels, self.image_shape, check_images=check_images)
        for kept in sorted(self.tmp.glob("part-*.parquet")):  # a resumed job: ids stay unique across parts
            self.rows.remember(pq.read_table(kept, columns=["id"]).column("id").to_pylist())

    def _contract(self, label_schema, producer, params, upstream, image_encoding, image_shape) -> None:
        """What every writer of the contract holds, wherever it writes."""
        self.image_encoding = check_encoding(image_encoding)
        if image_encoding == "raw" and image_shape is None:
            raise ValueError(f"{self.path}: raw images need image_shape")
        self.image_shape = list(image_shape) if image_shape is not None else None
        self.schema = schema_for(label_schema, image_encoding)
        self.label_columns = tuple(label_schema.names)
        self.producer, self.params, self.upstream = producer, params or {}, upstream or {}
        self.manifest: dict | None = None

    @staticmethod
    def part_name(index: int) -> str:
        return f"part-{index:05d}.parquet"

    def has_part(self, index: int) -> bool:
        return (self.tmp / self.part_name(index)).is_file()

    def write_part(self, index: int, table: pa.Table) -> None:
        target = self.tmp / self.part_name(index)
        where = f"{self.path} ({target.name})"
        table = self._conform(table, where)
        writing = self.tmp / f".{target.name}.writing"
        pq.write_table(table, writing, compression="zstd", row_group_size=8192)
        os.replace(writing, target)

    def _conform(self, table: pa.Table, where: str) -> pa.Table:
        """The contract's columns in its order and types, every row checked."""
        expected = [f.name for f in self.schema]
        if sorted(table.column_names) != sorted(expected):
            raise DatasetError(f"{where}: columns {table.column_names} do not match contract {expected}")
        table = table.select(expected)
        self.rows.check(table, where)
        try:
            return table.cast(self.schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as err:
            raise DatasetError(f"{where}: columns do not have the contract's types ({err})") from err

    def commit(self) -> dict:
        parts = sorted(self.tmp.glob("part-*.parquet"))
        if [p.name for p in parts] != [self.part_name(i) for i in range(len(parts))]:
            raise DatasetError(f"{self.path}: parts are not numbered 0..{len(parts) - 1}: {[p.name for p in parts]}")
        files = [{"name": p.name, "rows": pq.ParquetFile(p).metadata.num_rows, "sha256": file_sha256(p)} for p in parts]
        if not sum(f["rows"] for f in files):
            raise DatasetError(f"{self.path}: no rows to write; nothing committed"
                               + (" (the previous dataset is kept)" if self.path.exists() else ""))
        self.manifest = self._manifest(files, self.image_shape or self._first_png_shape(
            next(p for p, f in zip(parts, files) if f["rows"])))
        (self.tmp / MANIFEST).write_text(json.dumps(self.manifest, indent=2, sort_keys=True, default=str))
        _replace_dir(self.tmp, self.path)
        self.lock.release()
        return self.manifest

    def _manifest(self, files: list[dict], shape: list[int]) -> dict:
        return {
            "format": FORMAT,
            "num_rows": sum(f["rows"] for f in files),
            "image_shape": shape,
            "channels": channels(shape),
            "image_encoding": self.image_encoding,
            "label_columns": list(self.label_columns),
            "schema": {f.name: str(f.type) for f in self.schema},
            "files": files,
            "producer": self.producer,
            "params": self.params,
            "upstream": dict(sorted(self.upstream.items())),
        }

    def _first_png_shape(self, part) -> list[int]:
        """Every image of a dataset has one shape (the row checks hold it): read it off the first."""
        first_image = pq.read_table(part, columns=["image"], filesystem=getattr(self, "fs", None)
                                    ).column("image")[0]["bytes"].as_py()
        return list(decode_png(first_image).shape)

    def abort(self) -> None:
        if self.resume_key is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.lock.release()

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def _replace_dir(src: Path, dst: Path) -> None:
    """Move a finished directory into place; the old one is removed only after."""
    old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


class ObjectStoreWriter(DatasetWriter):
    """The writer for an ``s3://`` target (``DatasetWriter(s3_uri, ...)`` makes one). Object
    stores have no rename, so the commit is by manifest: parts are staged under a hidden
    prefix beside the target (``.<name>.partial-<key>/`` with a resume key, so a rerun keeps
    the finished ones); the commit deletes the old manifest (from then on readers see "no
    manifest: unfinished write", never a mixed dataset), copies the parts to their final
    names server-side, removes parts of the old dataset that the new one lacks, writes the
    manifest last and removes the staging prefix. Each object appears whole or not at all
    (a PUT is atomic), so a staged part is always complete. There is no lock on object
    storage: one writer per target is the caller's to keep (the refine stage is one job)."""

    def __init__(self, path: str, *, label_schema: pa.Schema, producer: str, params: dict | None = None,
                 upstream: dict[str, str] | None = None, resume_key: str | None = None,
                 bad_labels: BadLabels | None = None, check_images: bool = True, image_encoding: str = "png",
                 image_shape: list[int] | None = None):
        from pyarrow import fs
        self.path = path.rstrip("/")
        self._contract(label_schema, producer, params, upstream, image_encoding, image_shape)
        self.fs, self.root = storage.resolve(self.path)
        parent, name = self.root.rsplit("/", 1) if "/" in self.root else (self.root, "")
        if not name:
            raise DatasetError(f"{self.path}: a dataset needs a prefix inside the bucket (s3://bucket/name)")
        staged = f".{name}.partial-{resume_key}" if resume_key else f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        self.tmp = f"{parent}/{staged}"
        for stale in self.fs.get_file_info(fs.FileSelector(parent, allow_not_found=True)):
            base = stale.base_name
            if stale.path != self.tmp and base.startswith(f".{name}.") and (".tmp-" in base or ".partial-" in base):
                if ".partial-" in base and resume_key:
                    print(f"{self.path}: an interrupted job with other inputs or settings left parts; starting clean")
                self.fs.delete_dir(stale.path)
        self.resume_key = resume_key
        self.rows = RowChecker(self.label_columns, bad_labels, self.image_shape, check_images=check_images)
        for kept in self._staged():  # a resumed job: ids stay unique across parts
            self.rows.remember(pq.read_table(kept, columns=["id"], filesystem=self.fs).column("id").to_pylist())

    def _staged(self) -> list[str]:
        from pyarrow import fs
        found = self.fs.get_file_info(fs.FileSelector(self.tmp, allow_not_found=True))
        return sorted(f.path for f in found if f.base_name.startswith("part-") and f.base_name.endswith(".parquet"))

    def has_part(self, index: int) -> bool:
        from pyarrow import fs
        return self.fs.get_file_info(f"{self.tmp}/{self.part_name(index)}").type == fs.FileType.File

    def write_part(self, index: int, table: pa.Table) -> None:
        table = self._conform(table, f"{self.path} ({self.part_name(index)})")
        pq.write_table(table, f"{self.tmp}/{self.part_name(index)}", filesystem=self.fs, compression="zstd",
                       row_group_size=8192)

    def commit(self) -> dict:
        from pyarrow import fs
        parts = self._staged()
        names = [p.rsplit("/", 1)[1] for p in parts]
        if names != [self.part_name(i) for i in range(len(parts))]:
            raise DatasetError(f"{self.path}: parts are not numbered 0..{len(parts) - 1}: {names}")
        files = [{"name": name, "rows": pq.ParquetFile(self.fs.open_input_file(p)).metadata.num_rows,
                  "sha256": file_sha256(p, self.fs)} for name, p in zip(names, parts)]
        if not sum(f["rows"] for f in files):
            raise DatasetError(f"{self.path}: no rows to write; nothing committed")
        self.manifest = self._manifest(files, self.image_shape or self._first_png_shape(
            next(p for p, f in zip(parts, files) if f["rows"])))
        manifest = f"{self.root}/{MANIFEST}"
        if self.fs.get_file_info(manifest).type == fs.FileType.File:
            self.fs.delete_file(manifest)  # first: from here readers see an unfinished write, not a mix
        for name, part in zip(names, parts):
            self.fs.copy_file(part, f"{self.root}/{name}")
        for old in self.fs.get_file_info(fs.FileSelector(self.root, allow_not_found=True)):
            if old.base_name.startswith("part-") and old.base_name not in names:
                self.fs.delete_file(old.path)
        with self.fs.open_output_stream(manifest) as out:  # last: the commit
            out.write(json.dumps(self.manifest, indent=2, sort_keys=True, default=str).encode())
        self.fs.delete_dir(self.tmp)
        return self.manifest

    def abort(self) -> None:
        if self.resume_key is None:
            self.fs.delete_dir_contents(self.tmp, missing_dir_ok=True)


def write_dataset(path, ids, images_uint8, labels: dict[str, np.ndarray], *, source: str,
                  producer: str, label_schema: pa.Schema | None = None, params: dict | None = None,
                  upstream: dict | None = None, rows_per_file: int = 50_000,
                  bad_labels: BadLabels | None = None, image_encoding: str = "png") -> dict:
    """Write a whole in-memory dataset in parts of ``rows_per_file`` rows; returns the manifest.
    ``label_schema``: the task's label types (inferred from the arrays when not given);
    ``bad_labels``: the task's label check."""
    label_schema = label_schema if label_schema is not None else infer_label_schema(labels)
    with DatasetWriter(path, label_schema=label_schema, producer=producer, params=params,
                       upstream=upstream, bad_labels=bad_labels, image_encoding=image_encoding,
                       image_shape=list(np.shape(images_uint8)[1:])) as writer:
        for index, start in enumerate(range(0, len(ids), rows_per_file)):
            stop = start + rows_per_file
            writer.write_part(index, make_table(ids[start:stop], images_uint8[start:stop],
                                                {k: np.asarray(v)[start:stop] for k, v in labels.items()}, source,
                                                label_schema, image_encoding))
    return writer.manifest


# ---------------------------------------------------------------- reading

def read_parquet(file, **options) -> pa.Table:
    """A local Parquet file, or an ``s3://`` object's."""
    filesystem, where = storage.resolve(file) if storage.is_remote(file) else (None, file)
    return pq.read_table(where, filesystem=filesystem, **options)


@dataclass(frozen=True)
class ImageDataset:
    path: Path | str  # a directory, or an s3:// prefix
    manifest: dict

    @property
    def digest(self) -> str:
        return manifest_digest(self.manifest)

    @property
    def num_rows(self) -> int:
        return self.manifest["num_rows"]

    @property
    def label_columns(self) -> list[str]:
        return self.manifest["label_columns"]

    @property
    def image_encoding(self) -> str:
        return self.manifest.get("image_encoding", "png")  # datasets written before raw existed

    @property
    def label_schema(self) -> pa.Schema:
        """The label columns with their pyarrow types, as the producing task declared them."""
        filesystem, where = storage.resolve(self.files[0]) if storage.is_remote(self.path) else (None, self.files[0])
        schema = pq.read_schema(where, filesystem=filesystem)
        return pa.schema([(name, canonical_type(schema.field(name).type)) for name in self.label_columns])

    @property
    def files(self) -> list:
        """Paths, or ``s3://`` URIs for a dataset in object storage."""
        if storage.is_remote(self.path):
            return [f"{self.path}/{f['name']}" for f in self.manifest["files"]]
        return [self.path / f["name"] for f in self.manifest["files"]]

    def tables(self) -> Iterator[tuple[Path, pa.Table]]:
        expected = self.manifest["schema"]
        for file in self.files:
            try:
                table = read_parquet(file)
            except Exception as err:
                raise DatasetError(f"{file}: not a readable Parquet file ({err})") from err
            check_schema(table.schema, expected, file)
            yield file, table

    def load(self) -> dict[str, np.ndarray]:
        """Everything in memory: ids, images (float32 N x H x W in [0,1]) and label columns."""
        parts = [(file, table) for file, table in self.tables()]
        out = {"id": np.array([i for _, t in parts for i in t.column("id").to_pylist()], dtype=object)}
        images = [decode_image_column(t, str(f), self.manifest["image_shape"]) for f, t in parts if t.num_rows]
        out["image"] = np.concatenate(images) if images else np.zeros((0, 0, 0), np.float32)
        for name in self.label_columns:
            out[name] = np.concatenate([label_numpy(t.column(name)) for _, t in parts])
        return out


def check_schema(actual: pa.Schema, expected: dict[str, str], file) -> None:
    """``expected``: the manifest's column name -> pyarrow type string."""
    for name, type_ in expected.items():
        if name not in actual.names:
            raise DatasetError(f"{file}: missing column {name!r} (has {actual.names})")
        got = str(canonical_type(actual.field(name).type))
        if got != type_:
            raise DatasetError(f"{file}: column {name!r} has type {got}, expected {type_}")


def open_dataset(path: str | Path, *, verify_hashes: bool = True) -> ImageDataset:
    """Open and validate a dataset (a directory or an ``s3://`` prefix): manifest present and
    well-formed, files intact."""
    from pyarrow import fs
    remote = storage.is_remote(path)
    path = str(path).rstrip("/") if remote else Path(path)
    filesystem, root = storage.resolve(path) if remote else (fs.LocalFileSystem(), str(path))
    manifest_path = f"{path}/{MANIFEST}" if remote else path / MANIFEST
    if filesystem.get_file_info(f"{root}/{MANIFEST}").type != fs.FileType.File:
        raise DatasetError(f"{path}: no {MANIFEST}; not a simrefinery dataset or an unfinished write")
    try:
        with filesystem.open_input_stream(f"{root}/{MANIFEST}") as stream:
            manifest = json.loads(stream.read())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{manifest_path}: invalid JSON ({err})") from err
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    for entry in manifest["files"]:
        file = f"{path}/{entry['name']}" if remote else path / entry["name"]
        where = f"{root}/{entry['name']}"
        if filesystem.get_file_info(where).type != fs.FileType.File:
            raise DatasetError(f"{file}: listed in the manifest but missing")
        if verify_hashes and file_sha256(where, filesystem) != entry["sha256"]:
            raise DatasetError(f"{file}: content does not match the manifest's sha256 (modified or corrupt)")
    return ImageDataset(path, manifest)


def validate(path: str | Path, bad_labels: BadLabels | None = None) -> ImageDataset:
    """The one validation pass every stage runs on its inputs before any work: the manifest
    and file hashes, each file's schema, then row by row (``RowChecker``: ids, labels,
    ``bad_labels``, every image decodes with the manifest's shape), one file in memory at a
    time; a dataset with no rows is refused."""
    dataset = open_dataset(path)
    if not dataset.num_rows:
        raise DatasetError(f"{dataset.path}: the dataset has no rows")
    rows = RowChecker(dataset.label_columns, bad_labels, dataset.manifest["image_shape"])
    total = 0
    for file, table in dataset.tables():
        rows.check(table, str(file))
        total += table.num_rows
    if total != dataset.num_rows:
        raise DatasetError(f"{dataset.path}: manifest says {dataset.num_rows} rows, files hold {total}")
    return dataset


def open_unlabeled(path: str | Path) -> ImageDataset:
    """Real images for training (the refiner, self-training), validated: refuse any dataset
    with labels."""
    real = validate(path)
    if real.label_columns:
        raise DatasetError(f"{path}: real data for training must be unlabelled, has label columns {real.label_columns}")
    return real


def open_training_set(path: str | Path, label_schema: pa.Schema, bad_labels: BadLabels | None = None) -> ImageDataset:
    """Synthetic or refined images to train an estimator on (or to refine), validated:
    refuse real data (only evaluate reads real labels) and data without the task's label
    columns."""
    data = validate(path, bad_labels)
    if data.manifest["producer"] == "stages.ingest":
        raise DatasetError(f"{path}: real data must not train the estimator (only evaluate reads real labels)")
    missing = [name for name in label_schema.names if name not in data.label_columns]
    if missing:
        raise DatasetError(f"{path}: has no {missing} label column(s) to train on (has {data.label_columns})")
    return data
