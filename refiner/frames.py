"""Frames for ``simrefinery refine``: a folder of images, Parquet files with an ``image``
column (a Hugging Face dataset's export) or a ``save_to_disk`` directory, streamed into an
unlabelled simrefinery dataset at the refiner's image size, one part per 1,024 frames: millions
of frames pass without being held in memory, and a killed read resumes at its next part."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from refiner import data
from refiner.errors import Refused
from refiner.progress import bar
from refiner.tasks.images import pixels, readers
from refiner.tasks.world import read_summary


def refine_source(source: str, out: str, shape: list[int] | None, image_encoding: str, resize: bool,
                  checkpoint: Path, folder: str) -> tuple[data.ImageDataset, bool]:
    """``simrefinery refine``'s source as a dataset the refine job reads, and whether it was
    written here: a simrefinery dataset as it is (real rows refused: only evaluate reads real
    labels), other frames streamed first into ``OUT-input`` (``folder``: the source as its
    params record it). Images of another size or colour than the refiner's (``shape``, from
    its ``checkpoint``) are refused (frames: unless ``resize``)."""
    from refiner.data import storage
    if storage.is_remote(source) or (Path(source) / data.MANIFEST).is_file():
        dataset = data.open_training_set(source, pa.schema([]))
        if shape is not None and list(dataset.manifest["image_shape"]) != list(shape):
            raise Refused(f"refine: {source}: its images are {shape_text(dataset.manifest['image_shape'])}; "
                          f"the refiner takes {shape_text(shape)}")
        return dataset, False
    if shape is None:
        raise Refused(f"refine: {checkpoint}: the checkpoint records no image size (retrain it: dvc repro train_refiner)")
    return write_frames(Path(source), f"{out.rstrip('/')}-input", list(shape), image_encoding,
                        params={"folder": folder}, resize=resize), True


def write_frames(source: Path, out: str, shape: list[int], image_encoding: str, params: dict,
                 resize: bool = False) -> data.ImageDataset:
    """``source``'s frames as the dataset ``out`` (unreadable ones skipped and reported). A
    frame of another size or colour than ``shape`` is refused, naming both, unless ``resize``:
    stretched or made grey, the refiner's output would not be the user's frame refined."""
    if not (source.is_dir() or source.suffix == ".parquet" and source.is_file()):
        raise Refused(f"refine: {source}: neither a simrefinery dataset, a folder of images nor Parquet")
    pre = readers.Preprocess(tuple(shape[:2]), "resize", "rgb" if len(shape) == 3 else "gray")
    rows, skipped, resumed = 0, [], False
    with data.open_writer(out, label_schema=pa.schema([]), producer="simrefinery refine", params=params,
                          image_encoding=image_encoding, image_shape=shape,
                          resume_key=_listing_key(source, shape, image_encoding)) as writer:
        for index, batch in enumerate(bar(stream_images(source), desc=f"refine: reading {source}")):
            if writer.has_part(index):  # a resumed run: read before the kill
                resumed = True
                continue
            if not resize:
                _refuse_other_shapes(source, batch, shape)
            read, _ = readers.assemble(None, "", batch, {}, pre, str(source))
            skipped += read.skipped
            rows += len(read.ids)
            images = np.stack(read.images) if read.ids else np.zeros((0, *shape), np.uint8)
            writer.write_part(index, data.make_table(read.ids, images, {}, "synthetic", pa.schema([]), image_encoding))
        if not rows and not resumed:  # refused here, naming the source, before the writer names its output
            raise Refused(f"refine: {source}: no readable frame in it ({len(skipped)} skipped)")
    print(read_summary(f"refine: {source}", rows, skipped))
    print(f"refine: {rows} frames -> {out}")
    return data.open_training_set(out, pa.schema([]))


def _refuse_other_shapes(source: Path, batch: dict, shape: list[int]) -> None:
    for name, image in batch.items():
        found = None if isinstance(image, ValueError) else _misfit(image, list(shape))  # refused as read
        if found is not None:
            raise Refused(f"refine: {source}: {name} is {shape_text(found)}; the refiner takes {shape_text(shape)} "
                          "frames (--resize resizes and converts them)")


def _misfit(image: Path | bytes, shape: list[int]) -> list[int] | None:
    """The frame's shape where it is not ``shape``, else None (None too where unreadable: its
    reader skips and reports it). From the file's header: the pixels are decoded only to tell
    a grey frame saved as RGB for a grey refiner."""
    try:
        with pixels.open_image(image) as frame:
            size = [frame.height, frame.width]
            colour = frame.mode == "P" or len(frame.getbands()) >= 3
            if colour and shape == size:  # a grey refiner: an RGB file may hold a grey frame
                colour = not pixels.is_gray(frame)
    except (UnidentifiedImageError, OSError, ValueError, TypeError, Image.DecompressionBombError):
        return None
    found = [*size, *([3] if colour else [])]
    return None if found == shape else found


def shape_text(shape) -> str:
    """8x8 (grey), 64x64x3 (RGB)."""
    return f"{data.shape_text(shape)} ({'RGB' if len(shape) == 3 else 'grey'})"


def stream_images(path: Path, batch_rows: int = 1024) -> Iterator[dict[str, Path | bytes]]:
    """The images of a folder, a Parquet file or directory (a Hugging Face dataset's parquet
    export included) or a ``save_to_disk`` directory, ``batch_rows`` at a time (key -> file or
    image bytes): millions of frames pass without being held in memory (a ``save_to_disk``
    directory is read whole)."""
    files = [path] if path.is_file() and path.suffix == ".parquet" else sorted(path.rglob("*.parquet"))
    if files:
        for file in files:
            yield from _parquet_images(file, file.name if file == path else file.relative_to(path).as_posix(),
                                       batch_rows)
        return
    table = readers.table_source(path)
    sources = table[1] if table is not None else readers.list_images(path)
    keys = list(sources)
    for start in range(0, len(keys), batch_rows):
        yield {key: sources[key] for key in keys[start:start + batch_rows]}


def _parquet_images(file: Path, name: str, batch_rows: int) -> Iterator[dict[str, bytes]]:
    try:
        yield from _parquet_batches(file, name, batch_rows)
    except (pa.ArrowException, OSError) as err:  # truncated, or not Parquet at all
        raise data.DatasetError(f"{file}: not a readable Parquet file ({str(err).splitlines()[0]})") from None


def _parquet_batches(file: Path, name: str, batch_rows: int) -> Iterator[dict[str, bytes]]:
    parquet = pq.ParquetFile(file)
    names = parquet.schema_arrow.names
    if "image" not in names:
        raise data.DatasetError(f"{file}: a table of images needs an 'image' column (has {names})")
    row = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=["image", *(["id"] if "id" in names else [])]):
        images = readers.image_bytes(batch.column("image"), file)
        keys = ([str(key) for key in batch.column("id").to_pylist()] if "id" in names else
                [f"{name}#{row + i}" for i in range(batch.num_rows)])
        repeated = [key for key, count in Counter(keys).items() if count > 1]
        if repeated:  # one frame would silently replace another
            raise data.DatasetError(f"{file}: id {repeated[0]!r} names two frames")
        row += batch.num_rows
        yield {key: value or b"" for key, value in zip(keys, images.to_pylist())}  # a null: skipped as unreadable


def _listing_key(folder: Path, shape: list[int], encoding: str) -> str:
    """Names the staging of a folder's frames: the same files (names, sizes, times) read
    the same way resume; any change starts clean."""
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    listing = [(p.relative_to(folder).as_posix() if p != folder else p.name, p.stat().st_size, p.stat().st_mtime_ns)
               for p in files]
    return hashlib.sha256(repr((listing, shape, encoding)).encode()).hexdigest()[:16]
