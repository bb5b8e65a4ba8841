"""The image-dataset contract: every stage reads and writes datasets through this package.

A dataset is a directory (or an ``s3://`` prefix, ``storage``) of Parquet files with
deterministic names (``part-00000.parquet``, ...) plus ``_manifest.json`` (``manifest``:
row count, file hashes, schema, producer, params, upstream digests). Its digest is the
SHA-256 of the canonical manifest, so DVC, MLflow and Prefect all name the same bytes the
same way.

Columns (``schema``): ``id``, ``image``, the task's label columns (their pyarrow types come
from the task's label schema and are recorded in the manifest: integers, floats,
fixed-size float lists for keypoints and boxes, image structs for masks), ``source``. The
images are 8-bit, grayscale (H x W) or RGB (H x W x 3), one shape per dataset, in one of two
encodings (``codec``; every reader here takes both):

- ``png``: the Hugging Face ``Image`` struct (``{bytes, path}``) holding PNG bytes; pyarrow,
  pandas, Ray Data and ``datasets`` read it without project code.
- ``raw``: each cell the image's pixels as bytes, row-major (H, W, C), ``large_binary``: a
  part's pixels are one contiguous buffer, about 100x faster to read than PNG
  (BENCHMARKS.md). ``np.frombuffer(cell, np.uint8).reshape(image_shape)`` in pandas;
  ``ray.data.read_parquet(..., tensor_column_schema={"image": (np.uint8, shape)})`` gives
  Ray's tensor type.

Writes are atomic and resumable (``writer``: ``open_writer``); every row is checked where it
enters and again by ``validate`` (``checks``), so a bad record is refused naming its file and
row id before any work, and never committed (``reader``).

Outside this package, import from ``refiner.data`` itself: the names below are its API.
"""

from refiner.data.checks import BadLabels, RowChecker, check_schema
from refiner.data.codec import (channels, decode_image_column, decode_image_column_uint8, decode_png, encode_png,
                                image_column, raw_column, shape_text, to_uint8)
from refiner.data.manifest import FORMAT, MANIFEST, canonical_json, file_sha256, manifest_digest
from refiner.data.reader import (ImageDataset, open_dataset, open_training_set, open_unlabeled, read_parquet,
                                 validate)
from refiner.data.schema import (IMAGE_TYPE, RAW_TYPE, REAL, canonical_type, class_field, infer_label_schema, label_array,
                                 label_numpy, schema_for)
from refiner.data.writer import DatasetWriter, make_table, open_writer, write_dataset
from refiner.errors import DatasetError

__all__ = ["class_field", "BadLabels", "RowChecker", "check_schema", "channels", "decode_image_column", "decode_image_column_uint8",
           "decode_png", "encode_png", "image_column", "raw_column", "shape_text", "to_uint8", "FORMAT", "MANIFEST",
           "canonical_json", "file_sha256", "manifest_digest", "ImageDataset", "open_dataset", "open_training_set",
           "open_unlabeled", "read_parquet", "validate", "IMAGE_TYPE", "RAW_TYPE", "REAL", "canonical_type",
           "infer_label_schema", "label_array", "label_numpy", "schema_for", "DatasetWriter", "make_table",
           "open_writer", "write_dataset", "DatasetError"]
