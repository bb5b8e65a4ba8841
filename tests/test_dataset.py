import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refiner import data
from refiner.data import DatasetError, make_table, open_dataset, open_writer, validate, write_dataset
from tests.helpers import uint8_images

LABELS = pa.schema([("label", pa.int64())])


def write_small(path, n=25, rows_per_file=10, seed=0, **kwargs):
    images = uint8_images(n, seed=seed)
    ids = np.array([f"id-{i}" for i in range(n)], dtype=object)
    labels = np.arange(n) % 10
    write_dataset(path, ids, images, {"label": labels}, source="synthetic", producer="test",
                  rows_per_file=rows_per_file, **kwargs)
    return ids, images, labels


def test_round_trip_keeps_ids_pixels_labels(tmp_path):
    ids, images, labels = write_small(tmp_path / "ds")
    loaded = validate(tmp_path / "ds").load()
    assert list(loaded["id"]) == list(ids)
    assert np.array_equal(loaded["label"], labels)
    assert np.array_equal(data.to_uint8(loaded["image"]), images)


def test_deterministic_file_names_manifest_and_digest(tmp_path):
    write_small(tmp_path / "a")
    write_small(tmp_path / "b")
    a, b = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        ".huggingface.yaml", "_manifest.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert a.num_rows == 25 and a.manifest["image_shape"] == [8, 8]
    assert a.digest == b.digest
    write_small(tmp_path / "c", seed=1)
    assert open_dataset(tmp_path / "c").digest != a.digest


def test_digest_covers_params_and_upstream(tmp_path):
    write_small(tmp_path / "a", params={"x": 1})
    write_small(tmp_path / "b", params={"x": 2})
    assert open_dataset(tmp_path / "a").digest != open_dataset(tmp_path / "b").digest


def test_readable_without_project_code(tmp_path):
    ids, images, labels = write_small(tmp_path / "ds")
    frame = pd.read_parquet(tmp_path / "ds" / "part-00000.parquet")
    assert list(frame.columns) == ["id", "image", "label", "source"]
    from io import BytesIO
    from PIL import Image
    first = np.asarray(Image.open(BytesIO(frame["image"][0]["bytes"])))
    assert np.array_equal(first, images[0])
    table = pq.read_table(tmp_path / "ds")  # the whole directory, as any Parquet reader would
    assert table.num_rows == 25
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"}


def test_unlabelled_dataset_has_no_label_column(tmp_path):
    write_dataset(tmp_path / "u", np.array(["a", "b"], dtype=object), uint8_images(2), {},
                  source="real", producer="test")
    assert pq.read_schema(tmp_path / "u" / "part-00000.parquet").names == ["id", "image", "source"]


def test_wrong_schema_is_refused_naming_the_file(tmp_path):
    write_small(tmp_path / "ds")
    part = tmp_path / "ds" / "part-00001.parquet"
    table = pq.read_table(part)
    table = table.set_column(2, "label", table.column("label").cast(pa.string()))
    pq.write_table(table, part)
    with pytest.raises(DatasetError, match="part-00001.parquet.*sha256"):
        open_dataset(tmp_path / "ds")
    with pytest.raises(DatasetError, match=r"part-00001.parquet: column 'label' has type string"):
        list(open_dataset(tmp_path / "ds", verify_hashes=False).tables())


def test_missing_column_is_refused(tmp_path):
    write_small(tmp_path / "ds", rows_per_file=100)
    part = tmp_path / "ds" / "part-00000.parquet"
    pq.write_table(pq.read_table(part).drop_columns(["label"]), part)
    with pytest.raises(DatasetError, match=r"part-00000.parquet: missing column 'label'"):
        list(open_dataset(tmp_path / "ds", verify_hashes=False).tables())


def test_corrupt_image_is_refused_naming_file_and_row(tmp_path):
    table = make_table(["good", "bad"], uint8_images(2), {"label": np.array([1, 2])}, "synthetic")
    images = table.column("image").to_pylist()
    images[1]["bytes"] = images[1]["bytes"][:20]  # truncated PNG
    table = table.set_column(1, "image", pa.array(images, data.IMAGE_TYPE))
    with pytest.raises(DatasetError, match=r"part-00000.parquet\): row id='bad': image is not a readable PNG"):
        with open_writer(tmp_path / "ds", label_schema=LABELS, producer="test") as writer:
            writer.write_part(0, table)
    assert not (tmp_path / "ds").exists()


def test_writer_refuses_tables_breaking_the_contract(tmp_path):
    with pytest.raises(DatasetError, match="do not match contract"):
        with open_writer(tmp_path / "ds", label_schema=LABELS, producer="test") as writer:
            writer.write_part(0, pa.table({"id": ["a"], "pixels": [b"x"]}))
    assert not (tmp_path / "ds").exists()


def test_not_a_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: no _manifest.json"):
        open_dataset(tmp_path / "empty")


def test_interrupted_write_leaves_no_dataset_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "ds"
    write_small(target, n=5)
    before = open_dataset(target).digest

    with pytest.raises(RuntimeError):
        with open_writer(target, label_schema=LABELS, producer="test") as writer:
            writer.write_part(0, make_table(["x", "y", "z"], uint8_images(3), {"label": np.array([1, 2, 3])}, "s"))
            raise RuntimeError("killed mid-write")
    assert open_dataset(target).digest == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "ds"]  # no temporary leftovers


def test_stale_temporary_directory_from_a_killed_writer_is_swept(tmp_path):
    stale = tmp_path / ".ds.tmp-deadbeef"
    stale.mkdir()
    (stale / "part-00000.parquet").write_bytes(b"half")
    write_small(tmp_path / "ds")
    assert not stale.exists()
    with pytest.raises(DatasetError):
        open_dataset(stale)  # a reader pointed at a half-written directory is refused too


def test_resumable_writer_keeps_finished_parts_for_the_same_job(tmp_path):
    table = make_table(["a", "b"], uint8_images(2), {"label": np.array([1, 2])}, "s")
    with pytest.raises(RuntimeError):
        with open_writer(tmp_path / "ds", label_schema=LABELS, producer="t", resume_key="job1") as writer:
            writer.write_part(0, table)
            raise RuntimeError("crash")
    assert not (tmp_path / "ds").exists()
    again = open_writer(tmp_path / "ds", label_schema=LABELS, producer="t", resume_key="job1")
    assert again.has_part(0) and not again.has_part(1)
    again.abort()  # killed again: its parts stay staged, its lock is released
    other = open_writer(tmp_path / "ds", label_schema=LABELS, producer="t", resume_key="job2")
    assert not other.has_part(0)  # another job starts clean (and swept job1's parts)
    other.write_part(0, table)
    other.write_part(1, make_table(["c", "d"], uint8_images(2), {"label": np.array([3, 4])}, "s"))
    assert other.commit()["num_rows"] == 4


def test_resumed_writer_still_refuses_ids_of_the_parts_it_kept(tmp_path):
    table = make_table(["a", "b"], uint8_images(2), {"label": np.array([1, 2])}, "s")
    writer = open_writer(tmp_path / "ds", label_schema=LABELS, producer="t", resume_key="job")
    writer.write_part(0, table)
    writer.abort()
    resumed = open_writer(tmp_path / "ds", label_schema=LABELS, producer="t", resume_key="job")
    with pytest.raises(DatasetError, match=r"part-00001.parquet\): row id='a': id is not unique"):
        resumed.write_part(1, table)


def test_parts_must_be_numbered_without_gaps(tmp_path):
    with pytest.raises(DatasetError, match="not numbered"):
        with open_writer(tmp_path / "ds", label_schema=LABELS, producer="t") as writer:
            writer.write_part(1, make_table(["a"], uint8_images(1), {"label": np.array([1])}, "s"))


def test_label_schema_with_keypoints_round_trips_and_is_recorded(tmp_path):
    schema = pa.schema([("label", pa.int64()), ("keypoints", pa.list_(pa.float32(), 4))])
    keypoints = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_dataset(tmp_path / "ds", np.array(["a", "b", "c"], dtype=object), uint8_images(3),
                  {"label": np.array([0, 1, 2]), "keypoints": keypoints}, label_schema=schema, source="s", producer="t")
    ds = validate(tmp_path / "ds")
    assert ds.manifest["schema"]["keypoints"] == "fixed_size_list<item: float>[4]"
    assert ds.label_schema == schema
    assert np.array_equal(ds.load()["keypoints"], keypoints)


def test_hugging_face_datasets_loads_a_dataset_directory_as_it_is(tmp_path):
    """The README's claim, checked with `datasets` itself: the dataset card's configs name the
    parts (the manifest beside them is not data), a class column is a ClassLabel."""
    import datasets
    from refiner.data import class_field
    schema = pa.schema([class_field("label", 5), ("box", pa.list_(pa.float32(), 4))])
    images = uint8_images(5, shape=(8, 9))
    write_dataset(tmp_path / "ds", np.array([f"r{i}" for i in range(5)], dtype=object), images,
                  {"label": np.arange(5), "box": np.ones((5, 4), np.float32)}, label_schema=schema, source="s",
                  producer="t", rows_per_file=2)
    assert "part-*.parquet" in (tmp_path / "ds" / ".huggingface.yaml").read_text()
    loaded = datasets.load_dataset(str(tmp_path / "ds"), split="train")
    assert loaded.num_rows == 5 and loaded.features["image"] == datasets.Image()
    assert loaded.features["label"] == datasets.ClassLabel(names=["0", "1", "2", "3", "4"])
    assert validate(tmp_path / "ds").label_schema.field("label").metadata == schema.field("label").metadata
    first = loaded.sort("id")[0]
    assert np.array_equal(np.asarray(first["image"]), images[0])  # decoded to a PIL image, same pixels
    assert first["label"] == 0 and first["box"] == [1.0, 1.0, 1.0, 1.0]


def test_hugging_face_datasets_serves_each_folder_its_own_rows_and_a_rewrite_its_new_ones(tmp_path, monkeypatch):
    """``datasets`` caches a local folder by its base name and config: two folders called
    ``refined``, and a dataset rewritten in place as a rerun does, each get their own rows."""
    import datasets
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")

    def write(where, num_rows):
        write_dataset(where, np.array([f"r{i}" for i in range(num_rows)], dtype=object), uint8_images(num_rows),
                      {"label": np.arange(num_rows) % 3}, source=str(num_rows), producer="t")
        return datasets.load_dataset(str(where), split="train", cache_dir=str(tmp_path / "hf" / "datasets")).num_rows
    assert write(tmp_path / "data" / "refined", 7) == 7
    assert write(tmp_path / "out" / "refined", 4) == 4  # another folder of the same name
    assert write(tmp_path / "data" / "refined", 5) == 5  # rewritten in place


# ---------------------------------------------------------------- the raw image encoding

@pytest.mark.parametrize("shape", [(8, 8), (6, 9, 3)])
def test_raw_encoding_round_trips_the_same_pixels_as_png(tmp_path, shape):
    images = uint8_images(25, shape=shape)
    ids = np.array([f"id-{i}" for i in range(25)], dtype=object)
    for encoding in ("png", "raw"):
        write_dataset(tmp_path / encoding, ids, images, {"label": np.arange(25) % 10}, source="s", producer="t",
                      rows_per_file=10, image_encoding=encoding)
    png, raw = validate(tmp_path / "png"), validate(tmp_path / "raw")
    assert raw.manifest["image_encoding"] == "raw" and png.manifest["image_encoding"] == "png"
    assert raw.manifest["image_shape"] == list(shape) and raw.manifest["channels"] == (3 if len(shape) == 3 else 1)
    assert np.array_equal(raw.load()["image"], png.load()["image"])
    assert raw.digest != png.digest  # the manifest says which bytes it holds
    assert pq.read_schema(raw.files[0]).field("image").type == pa.large_binary()


def test_raw_images_read_without_project_code(tmp_path):
    """pandas (np.frombuffer), Ray Data (its tensor type) and Hugging Face datasets (bytes) read raw images."""
    images = uint8_images(12, shape=(8, 9))
    write_dataset(tmp_path / "ds", np.array([f"r{i:02d}" for i in range(12)], dtype=object), images,
                  {"label": np.arange(12)}, source="s", producer="t", image_encoding="raw")
    frame = pd.read_parquet(tmp_path / "ds" / "part-00000.parquet")
    assert np.array_equal(np.frombuffer(frame["image"][3], np.uint8).reshape(8, 9), images[3])
    import datasets
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "ds" / "*.parquet"), split="train")
    assert np.array_equal(np.frombuffer(loaded.sort("id")[5]["image"], np.uint8).reshape(8, 9), images[5])


def test_ray_data_reads_raw_images_as_its_tensor_type(local_ray, tmp_path):
    import ray
    images = uint8_images(12, shape=(8, 9, 3))
    write_dataset(tmp_path / "ds", np.array([f"r{i:02d}" for i in range(12)], dtype=object), images,
                  {"label": np.arange(12)}, source="s", producer="t", image_encoding="raw")
    rows = ray.data.read_parquet(str(tmp_path / "ds"), tensor_column_schema={"image": (np.uint8, (8, 9, 3))})
    batch = rows.sort("id").take_batch(12, batch_format="numpy")
    assert batch["image"].shape == (12, 8, 9, 3) and np.array_equal(batch["image"], images)


@pytest.mark.parametrize("cell, problem", [(lambda c: c[:-1], "image holds 63 bytes"),  # one byte short
                                           (lambda c: None, "image is missing")])      # null: its own row named
def test_raw_image_of_the_wrong_size_is_refused_naming_file_and_row(tmp_path, cell, problem):
    write_small(tmp_path / "ds", image_encoding="raw")
    part = tmp_path / "ds" / "part-00001.parquet"
    table = pq.read_table(part)
    cells = table.column("image").to_pylist()
    cells[4] = cell(cells[4])
    broken = table.set_column(1, table.schema.field("image"), pa.array(cells, pa.large_binary()))
    pq.write_table(broken, part)
    manifest = json.loads((tmp_path / "ds" / "_manifest.json").read_text())
    manifest["files"][1]["sha256"] = data.file_sha256(part)  # well-formed files, one bad row
    (tmp_path / "ds" / "_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=rf"part-00001.parquet: row id='id-14': {problem}, the "
                                           r"dataset's 8x8 images take 64"):
        validate(tmp_path / "ds")


def test_raw_writer_refuses_images_of_another_shape(tmp_path):
    with open_writer(tmp_path / "ds", label_schema=LABELS, producer="t", image_encoding="raw",
                       image_shape=[8, 8]) as writer:
        with pytest.raises(DatasetError, match="image holds 81 bytes"):
            writer.write_part(0, make_table(["a"], uint8_images(1, shape=(9, 9)), {"label": [1]}, "s", LABELS, "raw"))
        writer.write_part(0, make_table(["b"], uint8_images(1), {"label": [1]}, "s", LABELS, "raw"))
    assert open_dataset(tmp_path / "ds").num_rows == 1
