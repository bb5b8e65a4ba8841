"""The gaze task end to end: the real `dvc repro` with tiny gaze params (sim-to-sim)."""

import json

import numpy as np
import pytest

from refiner import dataset
from refiner.tasks.gaze.angles import angular_error_deg
from tests.conftest import TINY, make_project, sh

TINY_GAZE = {**TINY, "task": "gaze", "image_encoding": "png",  # the digits repro runs raw
             "render": {"num_images": 96}, "gaze": {"num_real": 80},
             "train_refiner": {**TINY["train_refiner"], "conditional": False},  # gaze has no classes
             # one seed: the digits repro tests the spread over seeds
             "train_estimator": {**TINY["train_estimator"], "self_training_rounds": 0, "num_seeds": 1,
                                 "steps": 120, "eval_every": 60},  # gaze needs these to beat "straight ahead"
             "evaluate": {**TINY["evaluate"], "oracle": False}}  # the digits repro tests the oracle


@pytest.mark.slow
def test_gaze_repro_keeps_gaze_labels_and_reports_angular_error(tmp_path):
    env = make_project(tmp_path, TINY_GAZE)
    sh("dvc", "repro", cwd=tmp_path, env=env)
    synthetic, refined = dataset.validate(tmp_path / "data/synthetic"), dataset.validate(tmp_path / "data/refined")
    assert synthetic.label_columns == refined.label_columns == ["gaze_pitch", "gaze_yaw"]
    assert synthetic.manifest["image_encoding"] == refined.manifest["image_encoding"] == "png"
    assert refined.manifest["schema"]["gaze_pitch"] == "float"  # float32, from the task's label schema
    rows, refined_rows = synthetic.load(), refined.load()
    assert rows["image"].shape[1:] == (35, 55) and refined_rows["image"].shape == rows["image"].shape
    assert np.array_equal(rows["gaze_pitch"], refined_rows["gaze_pitch"]) and np.array_equal(rows["gaze_yaw"], refined_rows["gaze_yaw"])
    assert dataset.open_dataset(tmp_path / "data/real/unlabeled").label_columns == []
    test = dataset.open_dataset(tmp_path / "data/real/test").load()
    report = json.loads((tmp_path / "metrics/eval.json").read_text())
    assert report["metric"] == "error_deg"
    # a model that always answers "straight ahead" is the bar every trained estimator must clear
    truth = np.stack([test["gaze_pitch"], test["gaze_yaw"]], axis=1)
    straight_ahead = angular_error_deg(np.zeros_like(truth), truth).mean()
    assert "oracle" not in report
    for name in ("synthetic", "refined"):
        assert len(report[name]["error_deg_per_seed"]) == 1
        assert report[name]["error_deg"] == pytest.approx(np.mean(report[name]["error_deg_per_seed"]))
        assert max(report[name]["error_deg_per_seed"]) < straight_ahead, (name, straight_ahead)
    assert report["end_to_end_gain"] == pytest.approx(report["synthetic"]["error_deg"] - report["refined"]["error_deg"])
    assert report["realism"]["synthetic"] > 0.7  # rendered vs camera-profile eyes: told apart
    assert report["class_realism"] is None  # gaze has no classes
    assert report["selection_score"] is None or report["selection_score"] <= 0  # minus the seeds' disagreement
    assert (tmp_path / "plots/evaluate/errors.png").stat().st_size > 1000
    assert "angular error" in (tmp_path / "metrics/eval.md").read_text()
