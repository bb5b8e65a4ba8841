"""The contract's columns and their types: ``id``, ``image`` (PNG struct or raw bytes), the
task's label columns, ``source``; how label values become Arrow arrays and come back; the
Hugging Face ``datasets`` features recorded in each file's schema metadata."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
RAW_TYPE = pa.large_binary()  # large: a part of big images may pass 2 GiB
IMAGE_ENCODINGS = ("png", "raw")
REAL = "real"  # the source of camera rows: never trained on (only evaluate reads their labels)

def _hf_feature(type_: pa.DataType) -> dict:
    """The Hugging Face ``datasets`` feature of a label column's pyarrow type."""
    if type_ == IMAGE_TYPE:  # a mask
        return {"_type": "Image"}
    if pa.types.is_fixed_size_list(type_) or pa.types.is_list(type_):
        length = type_.list_size if pa.types.is_fixed_size_list(type_) else -1
        return {"_type": "List", "feature": _hf_feature(type_.value_type), "length": length}
    dtype = {"float": "float32", "double": "float64", "halffloat": "float16"}.get(str(type_), str(type_))
    return {"dtype": dtype, "_type": "Value"}


CLASS_NAMES = b"class_names"  # a label field's metadata: an integer class column's names, index = class


def class_field(name: str, num_classes: int, names: list[str] | None = None) -> pa.Field:
    """An integer class column that says its classes (a ``ClassLabel`` in Hugging Face ``datasets``)."""
    names = names or [str(i) for i in range(num_classes)]
    return pa.field(name, pa.int64(), metadata={CLASS_NAMES: json.dumps(names).encode()})


def _hf_field_feature(field: pa.Field) -> dict:
    if field.metadata and CLASS_NAMES in field.metadata:
        return {"_type": "ClassLabel", "names": json.loads(field.metadata[CLASS_NAMES])}
    return _hf_feature(field.type)


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
                   **{f.name: _hf_field_feature(f) for f in label_schema},
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

