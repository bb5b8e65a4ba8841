"""The images task: a user's folders and label tables in, RGB or grayscale of any size
through the whole pipeline, geometric labels kept."""

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from refiner import data
from refiner.cli import CAMERA, main as cli
from refiner.config import SimGANParams
from refiner.errors import CheckpointError, DatasetError, ParamsError
from refiner.params import load_params
from refiner.simgan import sizing
from refiner.simgan.refine_job import refine_dataset, refine_in_process
from refiner.simgan.trainer import SimGANTrainer, load_refiner
from refiner.tasks.images import readers

RGB = readers.Preprocess(None, "resize", "rgb")


def save(path, size=(20, 10), colour=(200, 30, 30), mode="RGB"):
    """An image of ``size`` (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)
    return path


def labels_table(rows: list[dict], path):
    frame = pd.DataFrame(rows)
    if path.suffix == ".csv":
        frame.assign(**{c: frame[c].map(json.dumps) for c in frame if isinstance(rows[0][c], list)}).to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return path


ROWS = [{"file": "a.png", "kind": 1, "kp": [10.0, 5.0, 0.0, 0.0], "box": [0.0, 0.0, 20.0, 10.0], "weight": 0.5},
        {"file": "sub/b.jpg", "kind": 0, "kp": [20.0, 10.0, 5.0, 5.0], "box": [5.0, 2.0, 15.0, 8.0], "weight": 1.5}]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_labels_in_csv_jsonl_and_parquet_read_the_same(tmp_path, suffix):
    save(tmp_path / "img/a.png")
    save(tmp_path / "img/sub/b.jpg", size=(40, 20))  # twice the size: resized, its positions halved
    read, kinds, pre = readers.read_labelled(tmp_path / "img", labels_table(ROWS, tmp_path / f"labels{suffix}"),
                                             "file", None, readers.Preprocess((10, 20), "resize", "rgb"))
    assert kinds == {"kind": "class", "kp": "keypoints[4]", "box": "box", "weight": "float"}
    ids, pixels, labels = read.arrays(kinds)
    assert list(ids) == ["a.png", "sub/b.jpg"] and pixels.shape == (2, 10, 20, 3) and not read.skipped
    assert labels["kind"].tolist() == [1, 0] and labels["kp"].dtype == np.float32
    np.testing.assert_allclose(labels["kp"], [ROWS[0]["kp"], np.array(ROWS[1]["kp"]) / 2])
    np.testing.assert_allclose(labels["box"], [ROWS[0]["box"], np.array(ROWS[1]["box"]) / 2])
    np.testing.assert_allclose(labels["weight"], [0.5, 1.5])


def test_resize_and_crop_move_keypoints_boxes_and_masks_with_the_image(tmp_path):
    image = np.zeros((50, 100, 3), np.uint8)
    image[20:30, 45:55] = 255  # a white square centred at (50, 25) of a 100 x 50 image
    Image.fromarray(image).save(tmp_path / "wide.png")
    mask = np.zeros((50, 100), np.uint8)
    mask[20:30, 45:55] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    rows = [{"file": "wide.png", "kp": [50.0, 25.0, 25.0, 0.0], "box": [45.0, 20.0, 55.0, 30.0], "mask": "mask.png"}]
    labels = labels_table(rows, tmp_path / "labels.jsonl")
    for fit, kp, box in (("resize", [16, 16, 8, 0], [14.4, 12.8, 17.6, 19.2]),   # x * 32/100, y * 32/50
                         ("crop", [16, 16, 0, 0], [12.8, 12.8, 19.2, 19.2])):    # the central 50 x 50, then * 32/50
        read, kinds, _ = readers.read_labelled(tmp_path, labels, "file", None, readers.Preprocess((32, 32), fit, "gray"))
        assert kinds["mask"] == "mask"
        _, pixels, out = read.arrays(kinds)
        np.testing.assert_allclose(out["kp"][0], kp, atol=1e-4)
        np.testing.assert_allclose(out["box"][0], box, atol=1e-4)
        moved_mask = data.decode_png(out["mask"][0])
        assert pixels.shape == (1, 32, 32) and moved_mask.shape == (32, 32)
        assert set(np.unique(moved_mask)) == {0, 255}  # nearest: no blended mask values
        x0, y0, x1, y1 = np.round(box).astype(int)
        assert moved_mask[y0:y1, x0:x1].mean() > 200 and moved_mask.sum() / 255 <= (x1 - x0 + 1) * (y1 - y0 + 1)
        assert pixels[0, y0:y1, x0:x1].mean() > 150  # the image moved the same way
    assert (readers.first_image_size(tmp_path, readers.Preprocess(None, "resize", "rgb"))) == (50, 100)


def test_a_users_folder_cannot_reach_outside_itself_or_pass_what_the_contract_refuses(tmp_path, monkeypatch):
    """The folder route's trust boundary: a 16-bit image, a decompression bomb (Pillow's limit,
    lowered here: an injected fault), a stray 1x1 image sorting first, an image linked from
    outside and a mask path leaving the labels' folder are each skipped with their reason; the
    world's size is the common one, not the first image's."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 2x this is Pillow's hard limit: 60x70 is a bomb here
    camera = tmp_path / "camera"
    for i in range(4):
        save(camera / f"frame{i}.png", size=(20, 10))
    save(camera / "0-tiny.png", size=(1, 1))
    Image.fromarray(np.full((10, 20), 40000, np.uint16)).save(camera / "deep.png")
    save(camera / "bomb.png", size=(60, 70))
    save(camera / "large.png", size=(50, 50))  # between the limit and twice it: Pillow only warned, naming no file
    outside = save(tmp_path / "elsewhere" / "secret.png", size=(20, 10), colour=(1, 2, 3))
    (camera / "linked.png").symlink_to(outside)
    (camera / "more").symlink_to(outside.parent, target_is_directory=True)  # a linked folder: not followed, said so
    read = readers.read_unlabelled(camera, RGB)
    assert read.ids == [f"frame{i}.png" for i in range(4)] and read.images[0].shape == (10, 20, 3)
    reasons = dict(read.skipped)
    assert "1x1 pixels, far from the 20x10" in reasons["0-tiny.png"]
    assert "I;16" in reasons["deep.png"] and "16-bit" in reasons["deep.png"]
    assert "decompression bomb" in reasons["bomb.png"].lower()
    assert "50x50 pixels, over Pillow's decompression-bomb limit of 2000" in reasons["large.png"]
    assert "outside" in reasons["linked.png"] and "secret.png" in reasons["linked.png"]
    assert "a linked folder" in reasons["more/"] and "not followed" in reasons["more/"]
    masks = tmp_path / "sim"
    save(masks / "a.png", size=(20, 10))
    save(masks / "b.png", size=(20, 10))
    save(tmp_path / "labels" / "m.png", size=(20, 10), mode="L", colour=255)  # named relative to the labels file
    table = labels_table([{"file": "a.png", "mask": "m.png"}, {"file": "b.png", "mask": "../elsewhere/secret.png"}],
                         tmp_path / "labels" / "labels.csv")
    read, _, _ = readers.read_labelled(masks, table, "file", {"mask": "mask"}, RGB)
    assert read.ids == ["a.png"] and "outside" in dict(read.skipped)["b.png"]


def test_every_skip_is_reported_with_its_reason_and_an_empty_source_is_refused(tmp_path):
    for name in ("ok.png", "bad_list.png", "missing.png", "twice.png", "orphan.png"):
        save(tmp_path / "img" / name)
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png")
    rows = [{"file": "ok.png", "kp": "[1, 2]"}, {"file": "bad_list.png", "kp": "[1, 2, 3]"},
            {"file": "missing.png", "kp": None}, {"file": "twice.png", "kp": "[1, 2]"}, {"file": "twice.png", "kp": "[3, 4]"},
            {"file": "broken.png", "kp": "[1, 2]"}, {"file": "ghost.png", "kp": "[1, 2]"}]
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    read, kinds, _ = readers.read_labelled(tmp_path / "img", labels, "file", {"kp": "keypoints[2]"}, RGB)
    assert read.ids == ["ok.png", "twice.png"]
    reasons = dict(read.skipped)
    assert reasons["bad_list.png"] == "label 'kp': wrong list length (3, expected 2)"
    assert reasons["missing.png"] == "label 'kp': missing"
    assert reasons["twice.png"] == "repeated label row (kept the first)"
    assert reasons["ghost.png"] == "label row without an image"
    assert reasons["orphan.png"] == "image without a label row"
    assert reasons["broken.png"].startswith("unreadable image or mask")
    assert "skipped 6" in read.summary("x")
    (tmp_path / "camera").mkdir()
    (tmp_path / "camera" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"camera: no usable images"):
        readers.read_unlabelled(tmp_path / "camera", RGB)
    pd.DataFrame([{"file": "ghost.png", "kp": "[1, 2]"}]).to_csv(labels, index=False)
    with pytest.raises(DatasetError, match=r"img: no usable labelled images"):
        readers.read_labelled(tmp_path / "img", labels, "file", None, RGB)


def test_a_parquet_dataset_and_a_hugging_face_directory_are_sources(tmp_path):
    """A simrefinery dataset is itself a source, and so is ``datasets``' save_to_disk."""
    from datasets import Dataset, Features, Image as HFImage, Sequence, Value
    pixels = np.random.default_rng(0).integers(0, 256, (4, 12, 16, 3), dtype=np.uint8)
    ids = np.array([f"r{i}" for i in range(4)], dtype=object)
    points = np.arange(16, dtype=np.float32).reshape(4, 4)
    data.write_dataset(tmp_path / "ours", ids, pixels, {"label": np.arange(4) % 2, "keypoints": points},
                          source="synthetic", producer="test")
    hf = Dataset.from_dict({"image": [Image.fromarray(p) for p in pixels], "label": [0, 1, 0, 1],
                            "keypoints": points.tolist()},
                           features=Features({"image": HFImage(), "label": Value("int64"),
                                              "keypoints": Sequence(Value("float32"))}))
    hf.save_to_disk(str(tmp_path / "hf"))
    for source in ("ours", "hf"):
        read, kinds, _ = readers.read_labelled(tmp_path / source, None, "file", None, RGB)
        assert kinds == {"label": "class", "keypoints": "keypoints[4]"}
        _, images, labels = read.arrays(kinds)
        assert np.array_equal(images, pixels) and np.array_equal(labels["keypoints"], points)
        frame, no_images = readers.table_source(tmp_path / source, with_images=False)  # what each stage reads
        assert no_images == {} and list(frame.columns) == ["file", "label", "keypoints"] and len(frame) == 4


def test_a_table_whose_image_cells_are_file_paths_is_refused_not_followed(tmp_path):
    """A file outside every folder landed in data/synthetic when a Parquet source's image
    strings were opened as paths (the reliability audit): strings are refused, naming the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    save(tmp_path / "outside.png")
    pq.write_table(pa.table({"image": [str(tmp_path / "outside.png")], "label": [1]}), tmp_path / "table.parquet")
    with pytest.raises(DatasetError, match=r"table.parquet: its image column holds string, not image bytes"):
        readers.read_labelled(tmp_path / "table.parquet", None, "file", None, RGB)


def test_the_world_is_built_from_params_and_its_checkpoints_refuse_another_world(tmp_path):
    from refiner.estimator.checkpoint import load_model, save_model
    from refiner.tasks import task_for
    save(tmp_path / "img/a.png")
    labels = labels_table([{"file": "a.png", "kind": 4, "kp": [1.0, 2.0]}], tmp_path / "labels.csv")
    regression = {"task": "images", "images.synthetic": str(tmp_path / "img"), "images.labels": str(labels),
                  "train_estimator.adaptation": "none"}
    with pytest.raises(ParamsError, match=r"train_refiner\.conditional: task images has no classes \(\['kp'\]\)"):
        task_for(load_params(overrides=regression))
    params = load_params(overrides={**regression, "train_refiner.conditional": False})
    world = task_for(params)
    head = world.head
    assert head.columns == ["kp"] and world.test_labels.names == ["kp"] and head.num_outputs == 2
    assert world.labels.names == ["kind", "kp"] and not head.has_classes
    # positions scaled by the 10 x 20 image: the network starts at its centre, the loss in quarter-sizes
    assert world.state["offset"] == [10, 5] and world.state["scale"] == [5, 2.5]
    network = head.estimator((10, 20, 3))
    assert network(torch.zeros(1, 3, 10, 20)).shape == (1, 2)
    assert head.loss(torch.tensor([[15.0, 5.0]]), torch.tensor([[10.0, 7.5]])).item() == pytest.approx((1 + 1) / 2)
    save_model(network, world, (10, 20, 3), 0, tmp_path / "model.pt")
    assert torch.equal(load_model(tmp_path / "model.pt", world)(torch.ones(1, 3, 10, 20)), network(torch.ones(1, 3, 10, 20)))
    classifier = task_for(load_params(overrides={
        "task": "images", "images.synthetic": str(tmp_path / "img"), "images.labels": str(labels), "images.target": ["kind"]}))
    assert classifier.head.num_classes == 5 and classifier.head.columns == ["kind"] and classifier.head.has_classes
    assert classifier.head.estimator((8, 8, 3))(torch.zeros(2, 3, 8, 8)).shape == (2, 5)
    with pytest.raises(CheckpointError, match=r"model.pt: an estimator for task images .* not for this task"):
        load_model(tmp_path / "model.pt", classifier)
    with pytest.raises(ParamsError, match=r"adaptation: task images has no classes to pseudo-label"):
        task_for(load_params(overrides={
            "task": "images", "images.synthetic": str(tmp_path / "img"), "images.labels": str(labels),
            "train_refiner.conditional": False, "train_estimator.adaptation": "self_training"}))
    with pytest.raises(ParamsError, match="images.synthetic: not set"):
        task_for(load_params(overrides={"task": "images"}))


def test_init_turns_the_conditional_discriminator_off_for_a_regression_and_keeps_it_for_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("a.png", "b.png"):
        save(tmp_path / "img" / name)
        save(tmp_path / "camera" / name)
    labels_table([{"file": "a.png", "kind": 1, "kp": [1.0, 2.0]}, {"file": "b.png", "kind": 0, "kp": [3.0, 4.0]}],
                 tmp_path / "labels.csv")
    base = ["init", "--synthetic", "img", "--labels", "labels.csv", "--real", "camera", "--params", "params.yaml"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train_refiner": {"conditional": True, "lambda": 0.3}}))
    sized = {**sizing.sized(np.asarray(Image.open(tmp_path / "img" / "a.png")).shape), **CAMERA}
    sized = {key: [list(layer) for layer in value] if key == "disc_layers" else value for key, value in sized.items()}
    cli(base)  # regresses kp: no classes to condition on
    written = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert written["train_refiner"] == {"conditional": False, "lambda": 10.0, **sized}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train_refiner": {"conditional": True, "lambda": 0.3}}))
    cli([*base, "--target", "kind"])
    written = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert written["train_refiner"] == {"conditional": True, "lambda": 0.3, **sized}
    (tmp_path / "params.yaml").unlink()
    cli([*base, "--target", "kind"])  # no params file: the defaults, which condition, plus the camera and sizes
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["train_refiner"] == sized


def test_init_makes_grey_folders_a_grey_world_and_says_so(tmp_path, monkeypatch, capsys):
    """Grey frames (one channel, or three equal ones) made RGB got a colour noise their camera
    never had; the colour mode is inferred, as the size is, unless --color sets it."""
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "img" / "a.png", colour=90, mode="L")
    save(tmp_path / "img" / "b.png", colour=(70, 70, 70))  # RGB, but grey
    save(tmp_path / "camera" / "a.jpg", colour=120, mode="L")
    labels_table([{"file": "a.png", "kp": [1.0, 2.0]}, {"file": "b.png", "kp": [3.0, 4.0]}], tmp_path / "labels.csv")
    base = ["init", "--synthetic", "img", "--labels", "labels.csv", "--real", "camera", "--params", "params.yaml"]
    written = lambda: yaml.safe_load((tmp_path / "params.yaml").read_text())["images"]["color"]  # noqa: E731
    cli(base)
    assert written() == "gray" and "colour: gray" in capsys.readouterr().out
    cli([*base, "--color", "rgb"])
    assert written() == "rgb"
    save(tmp_path / "camera" / "b.png", colour=(120, 100, 90))  # one colour frame: an RGB world
    cli(base)
    assert written() == "rgb" and "real rgb" in capsys.readouterr().out


def test_the_refiner_is_pixel_aligned_so_geometric_labels_stay_true():
    """Why keypoints, boxes and masks pass through refinement untouched: a change at one pixel
    moves the output only within the refiner's receptive field around that same pixel (no
    striding, no resampling), and shifting the input shifts the output alike."""
    from refiner.simgan.networks import Refiner
    torch.manual_seed(0)
    refiner = Refiner(3, channels=8, num_blocks=2).eval()
    radius = 1 + 2 * 2  # one 3x3 conv, then two per block
    blank = torch.zeros(1, 3, 40, 40)
    dot = blank.clone()
    dot[..., 20, 13] = 1.0
    with torch.no_grad():
        changed = (refiner(dot) - refiner(blank)).abs().sum(1)[0] > 1e-6
        rows, cols = np.nonzero(changed.numpy())
        assert changed[20, 13] and rows.min() >= 20 - radius and rows.max() <= 20 + radius
        assert cols.min() >= 13 - radius and cols.max() <= 13 + radius
        image = torch.rand(1, 3, 40, 40)
        shifted = torch.roll(image, (3, 5), (2, 3))
        inner = (slice(None), slice(None), slice(radius + 3, -radius - 3), slice(radius + 5, -radius - 5))
        assert torch.allclose(torch.roll(refiner(image), (3, 5), (2, 3))[inner], refiner(shifted)[inner], atol=1e-5)


def test_rgb_datasets_store_rgb_pngs_and_refuse_other_modes(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 9, 7, 3), dtype=np.uint8)
    manifest = data.write_dataset(tmp_path / "rgb", np.array(["a", "b", "c"], dtype=object), pixels, {},
                                     source="real", producer="test")
    assert manifest["image_shape"] == [9, 7, 3] and manifest["channels"] == 3
    assert np.array_equal(data.to_uint8(data.validate(tmp_path / "rgb").load()["image"]), pixels)
    buffer = io.BytesIO()
    Image.new("RGBA", (2, 2)).save(buffer, format="PNG")
    with pytest.raises(ValueError, match="PNG mode RGBA"):
        data.decode_png(buffer.getvalue())


def test_ray_refine_of_an_rgb_dataset_matches_the_plain_torch_loop(local_ray, tmp_path):
    rng = np.random.default_rng(0)
    synthetic, real = rng.random((64, 16, 12, 3), dtype=np.float32), rng.random((64, 16, 12, 3), dtype=np.float32)
    config = SimGANParams(channels=8, num_blocks=1, disc_layers=[[8, 1]], batch_size=16, pretrain_refiner_steps=2,
                          pretrain_disc_steps=2, steps=3, history_size=32)
    trainer = SimGANTrainer(synthetic, real, config)
    trainer.train(progress=False)
    torch.save(trainer.checkpoint((16, 12, 3)), tmp_path / "refiner.pt")
    n = 150
    keypoints = rng.random((n, 4), dtype=np.float32) * 12
    data.write_dataset(tmp_path / "synthetic", np.array([f"s{i}" for i in range(n)], dtype=object),
                          rng.integers(0, 256, (n, 16, 12, 3), dtype=np.uint8), {"keypoints": keypoints},
                          source="synthetic", producer="test", rows_per_file=40)
    source = data.validate(tmp_path / "synthetic")
    refined = refine_dataset(source, tmp_path / "refiner.pt", tmp_path / "refined", batch_size=32, num_actors=2,
                             progress=False)
    out, inputs = refined.load(), source.load()
    assert refined.manifest["image_shape"] == [16, 12, 3] and np.array_equal(out["keypoints"], keypoints)
    expected = refine_in_process(load_refiner(tmp_path / "refiner.pt", (16, 12, 3)), inputs["image"])
    assert np.abs(out["image"] - expected).max() <= 0.5 / 255 + 1e-6  # only 8-bit rounding
    assert np.abs(out["image"] - inputs["image"]).mean() > 0.01  # it really refined
