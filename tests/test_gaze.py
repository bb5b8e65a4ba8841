"""Gaze data: angle conventions against hand-computed cases, and each reader on fixtures
written here in the published formats (UnityEyes N.jpg + N.json, MPIIGaze .mat), good and bad."""

import json
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from refiner.errors import DatasetError
from refiner.tasks.gaze.angles import (EYE_SIZE, angular_error_deg, mpiigaze_vector_to_pitch_yaw,
                                       pitch_yaw_to_vector, unityeyes_look_to_pitch_yaw)
from refiner.tasks.gaze.readers import read_image_folder, read_mpiigaze, read_unityeyes

S30, C30 = 0.5, math.sqrt(3) / 2


@pytest.mark.parametrize("look, pitch_yaw_deg", [
    ((0, 0, -1, 0), (0, 0)),                # straight into the camera
    ((0, S30, -C30, 0), (30, 0)),           # up (UnityEyes' y points up)
    ((-S30, 0, -C30, 0), (0, 30)),          # towards the image's left
    ((0, -2 * S30, -2 * C30, 0), (-30, 0)),  # not unit length: normalised first
])
def test_unityeyes_look_vector_to_pitch_yaw(look, pitch_yaw_deg):
    assert np.degrees(unityeyes_look_to_pitch_yaw(look)) == pytest.approx(pitch_yaw_deg, abs=1e-9)


@pytest.mark.parametrize("vector, pitch_yaw_deg", [
    ((0, 0, -1), (0, 0)),
    ((0, -S30, -C30), (30, 0)),             # up (MPIIGaze's y points down)
    ((-S30, 0, -C30), (0, 30)),
    ((S30 * C30, -S30, -C30 * C30), (30, -30)),
])
def test_mpiigaze_vector_to_pitch_yaw_and_back(vector, pitch_yaw_deg):
    pitch_yaw = mpiigaze_vector_to_pitch_yaw(vector)
    assert np.degrees(pitch_yaw) == pytest.approx(pitch_yaw_deg, abs=1e-9)
    assert pitch_yaw_to_vector(np.array([pitch_yaw]))[0] == pytest.approx(vector, abs=1e-9)


def test_angular_error_in_degrees():
    truth = np.radians([[0.0, 0.0], [0.0, 0.0], [20.0, 10.0]])
    predicted = np.radians([[0.0, 10.0], [-7.0, 0.0], [20.0, 10.0]])
    assert angular_error_deg(predicted, truth) == pytest.approx([10.0, 7.0, 0.0], abs=1e-6)


# --- UnityEyes ---------------------------------------------------------------------------

def write_unityeyes(folder, name, eye_centre=(320, 240), look="(0.0, 0.5, -0.866, 0.0)",
                    head_pose="(352.0, 185.0, 0.0)", drop_key=None, image=True):
    """A 640x480 frame with a dark eye at ``eye_centre`` (top-left origin) and its JSON,
    whose 2D landmarks count y from the bottom as UnityEyes writes them."""
    cx, cy = eye_centre
    if image:
        frame = Image.new("RGB", (640, 480), (200, 170, 150))
        ImageDraw.Draw(frame).ellipse((cx - 60, cy - 25, cx + 60, cy + 25), fill=(20, 20, 20))
        frame.save(folder / f"{name}.jpg")
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    margin = [f"({cx + 60 * np.cos(a):.2f}, {480 - (cy + 25 * np.sin(a)):.2f}, 10.0)" for a in angles]
    iris = [f"({cx + 15 * np.cos(a):.2f}, {480 - (cy + 15 * np.sin(a)):.2f}, 9.0)" for a in angles]
    record = {"interior_margin_2d": margin, "iris_2d": iris, "head_pose": head_pose,
              "eye_details": {"look_vec": look, "pupil_size": "0.1", "iris_size": "0.9"}}
    if drop_key:
        record.pop(drop_key)
    (folder / f"{name}.json").write_text(json.dumps(record))


def test_unityeyes_reader_crops_the_eye_and_converts_the_label(tmp_path):
    write_unityeyes(tmp_path, "1", eye_centre=(300, 200))
    write_unityeyes(tmp_path, "2", eye_centre=(400, 260), look="(-0.5, 0.0, -0.866, 0.0)")
    result = read_unityeyes(tmp_path)
    assert result.skipped == []
    ids, images, gaze = result.arrays()
    assert list(ids) == ["unityeyes-1", "unityeyes-2"] and images.shape == (2, *EYE_SIZE)
    assert np.degrees(gaze).ravel() == pytest.approx([30, 0, 0, 30], abs=0.01)
    for image in images:  # the dark eye sits in the middle of the crop, skin at its corners
        assert image[EYE_SIZE[0] // 2, EYE_SIZE[1] // 2] < 60 and image[1, 1] > 120


def test_unityeyes_reader_reports_every_skipped_file_and_why(tmp_path):
    write_unityeyes(tmp_path, "1")
    (tmp_path / "2.json").write_text("{not json")
    write_unityeyes(tmp_path, "3", drop_key="eye_details")
    write_unityeyes(tmp_path, "4", image=False)
    write_unityeyes(tmp_path, "5", head_pose="(300.0, 180.0, 0.0)")  # 60 degrees down
    write_unityeyes(tmp_path, "6", look="(0.0, 0.5)")  # too short for a look vector
    result = read_unityeyes(tmp_path, max_head_pose_deg=30)
    assert result.ids == ["unityeyes-1"]
    reasons = {path.rsplit("/", 1)[-1]: reason for path, reason in result.skipped}
    assert "bad JSON" in reasons["2.json"]
    assert "missing key 'eye_details'" in reasons["3.json"]
    assert "unreadable image" in reasons["4.jpg"]
    assert "head pose (-60, 0)" in reasons["5.json"]
    assert "malformed value" in reasons["6.json"]
    assert "skipped 5" in result.summary("unityeyes")


# --- MPIIGaze ----------------------------------------------------------------------------

def mpiigaze_side(n, seed, vector=(0.0, -S30, -C30)):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(n, 36, 60), dtype=np.uint8)
    image[:, :, :30] = 0  # left half dark: shows whether the reader mirrored it
    return {"image": image, "gaze": np.tile(vector, (n, 1)), "pose": np.zeros((n, 3))}


def write_mat(path, data):
    from scipy.io import savemat
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"data": data})


def test_mpiigaze_reader_reads_both_eyes_and_mirrors_the_right(tmp_path):
    vector = (-S30 * C30, -S30, -C30 * C30)  # pitch 30, yaw 30
    write_mat(tmp_path / "Data/Normalized/p00/day01.mat",
              {"left": mpiigaze_side(3, 0, vector), "right": mpiigaze_side(2, 1, vector)})
    write_mat(tmp_path / "Data/Normalized/p01/day02.mat",
              {"left": mpiigaze_side(1, 2, vector), "right": mpiigaze_side(1, 3, vector)})
    result = read_mpiigaze(tmp_path)
    ids, images, gaze = result.arrays()
    assert result.skipped == [] and len(ids) == 7 and images.shape == (7, *EYE_SIZE)
    assert ids[0] == "mpiigaze-p00-day01-left-0000" and ids[3] == "mpiigaze-p00-day01-right-0000"
    assert np.degrees(gaze[0]) == pytest.approx([30, 30], abs=1e-4)
    assert np.degrees(gaze[3]) == pytest.approx([30, -30], abs=1e-4)  # mirrored: yaw negated
    assert images[0][:, :20].max() == 0 and images[3][:, -20:].max() == 0  # and the image flipped


def test_mpiigaze_reader_reports_bad_files_and_refuses_a_wrong_root(tmp_path):
    write_mat(tmp_path / "Data/Normalized/p00/day01.mat", {"left": mpiigaze_side(2, 0), "right": mpiigaze_side(2, 1)})
    write_mat(tmp_path / "Data/Normalized/p00/day02.mat", {"left": mpiigaze_side(2, 0)})  # no right eye
    (tmp_path / "Data/Normalized/p00/day03.mat").write_bytes(b"not a mat file")
    bad_count = mpiigaze_side(3, 0)
    bad_count["gaze"] = bad_count["gaze"][:2]
    write_mat(tmp_path / "Data/Normalized/p00/day04.mat", {"left": bad_count, "right": mpiigaze_side(1, 1)})
    result = read_mpiigaze(tmp_path)
    reasons = dict(result.skipped)
    assert "missing field" in reasons[str(tmp_path / "Data/Normalized/p00/day02.mat")]
    assert "unreadable .mat" in reasons[str(tmp_path / "Data/Normalized/p00/day03.mat")]
    assert "3 images but 2 gaze vectors" in reasons[str(tmp_path / "Data/Normalized/p00/day04.mat") + ":left"]
    assert len(result.ids) == 4 + 1  # day01 both eyes, day04's good right eye
    with pytest.raises(DatasetError, match="no Data/Normalized"):
        read_mpiigaze(tmp_path / "Data")


def test_mpiigaze_reader_skips_directionless_gaze_and_scales_float_images(tmp_path):
    """A zero or NaN gaze vector has no direction: skipped and reported, never a NaN label.
    Float images in [0, 1] are scaled (a plain uint8 cast made them black); out of range: skipped."""
    left = mpiigaze_side(4, 0)
    left["gaze"][1] = 0.0
    left["gaze"][2, 0] = np.nan
    right = mpiigaze_side(2, 1)
    right["image"] = right["image"].astype(np.float64) / 255
    right["image"][1, 0, 0] = 7.5  # floats beyond 0..1 but not 0..255 integers either: scaled as 0..255
    right["image"][1, 0, 1] = -3.0  # negative: refused
    write_mat(tmp_path / "Data/Normalized/p00/day01.mat", {"left": left, "right": right})
    result = read_mpiigaze(tmp_path)
    reasons = dict(result.skipped)
    day = str(tmp_path / "Data/Normalized/p00/day01.mat")
    assert "has no direction" in reasons[f"{day}:left[1]"] and "has no direction" in reasons[f"{day}:left[2]"]
    assert "range -3..7.5" in reasons[f"{day}:right[1]"]
    assert result.ids == ["mpiigaze-p00-day01-left-0000", "mpiigaze-p00-day01-left-0003",
                          "mpiigaze-p00-day01-right-0000"]
    ids, images, gaze = result.arrays()
    assert np.isfinite(gaze).all()
    assert images[2].max() > 200  # the float eye kept its brightness (mirrored, resized)


def test_unityeyes_reader_skips_a_zero_look_vector(tmp_path):
    write_unityeyes(tmp_path, "1")
    write_unityeyes(tmp_path, "2", look="(0.0, 0.0, 0.0, 0.0)")
    result = read_unityeyes(tmp_path)
    assert result.ids == ["unityeyes-1"]
    assert "has no direction" in dict(result.skipped)[str(tmp_path / "2.json")]


# --- a folder of unlabelled real eyes ------------------------------------------------------

def test_image_folder_reader_resizes_and_reports_what_it_skipped(tmp_path):
    Image.new("L", (120, 80), 100).save(tmp_path / "a.png")
    (tmp_path / "nested").mkdir()
    Image.new("RGB", (55, 35), (10, 200, 10)).save(tmp_path / "nested" / "b.JPG")
    (tmp_path / "notes.txt").write_text("not an eye")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    result = read_image_folder(tmp_path)
    ids, images, gaze = result.arrays()
    assert list(ids) == ["folder-a.png", "folder-nested/b.JPG"] and gaze is None
    assert images.shape == (2, *EYE_SIZE) and images[0].min() == images[0].max() == 100
    reasons = {path.rsplit("/", 1)[-1]: reason for path, reason in result.skipped}
    assert set(reasons) == {"notes.txt", "broken.png"}
    assert "not an image" in reasons["notes.txt"] and "unreadable image" in reasons["broken.png"]
