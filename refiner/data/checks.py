"""Row checks: every row is checked where it enters (ids unique and present, labels present,
finite and in the task's range, each image readable with the dataset's shape), by the writer
part by part and by ``validate`` file by file, so a bad record is refused naming its file
and row id before any work, and never committed."""

from __future__ import annotations

from collections import Counter
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from refiner.data.codec import decode_image_column
from refiner.data.schema import canonical_type, label_numpy
from refiner.errors import DatasetError

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


def check_schema(actual: pa.Schema, expected: dict[str, str], file) -> None:
    """``expected``: the manifest's column name -> pyarrow type string."""
    for name, type_ in expected.items():
        if name not in actual.names:
            raise DatasetError(f"{file}: missing column {name!r} (has {actual.names})")
        got = str(canonical_type(actual.field(name).type))
        if got != type_:
            raise DatasetError(f"{file}: column {name!r} has type {got}, expected {type_}")

