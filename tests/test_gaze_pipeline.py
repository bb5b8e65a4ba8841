"""The gaze task end to end: the real `dvc repro` with tiny gaze params (sim-to-sim)."""

import json

import numpy as np
import pytest

from refiner import dataset
from tests.conftest import TINY, make_project, sh

TINY_GAZE = {**TINY, "task": "gaze", "render": {"num_images": 96}, "gaze": {"num_real": 80},
             "train_task": {**TINY["train_task"], "self_training_rounds": 0}}


@pytest.mark.slow
def test_gaze_repro_keeps_gaze_labels_and_reports_angular_error(tmp_path):
    env = make_project(tmp_path, TINY_GAZE)
    sh("dvc", "repro", cwd=tmp_path, env=env)
    synthetic, refined = dataset.validate(tmp_path / "data/synthetic"), dataset.validate(tmp_path / "data/refined")
    assert synthetic.label_columns == refined.label_columns == ["gaze_pitch", "gaze_yaw"]
    rows, refined_rows = synthetic.load(), refined.load()
    assert rows["image"].shape[1:] == (35, 55) and refined_rows["image"].shape == rows["image"].shape
    assert np.array_equal(rows["gaze_pitch"], refined_rows["gaze_pitch"]) and np.array_equal(rows["gaze_yaw"], refined_rows["gaze_yaw"])
    assert dataset.open_dataset(tmp_path / "data/real/unlabeled").label_columns == []
    assert dataset.open_dataset(tmp_path / "data/real/test").label_columns == ["gaze_pitch", "gaze_yaw"]
    report = json.loads((tmp_path / "metrics/eval.json").read_text())
    for name in ("synthetic", "refined", "oracle"):
        assert 0.0 < report[name]["error_deg"] < 90.0 and len(report[name]["error_deg_per_seed"]) == 2
    assert (tmp_path / "plots/evaluate/gaze-errors.png").stat().st_size > 1000
    assert "angular error" in (tmp_path / "metrics/eval.md").read_text()


def test_gaze_needs_self_training_off(tmp_path):
    import yaml
    from stages.common import load_params
    params = yaml.safe_load(open("params.yaml"))
    params["task"] = "gaze"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit, match="self_training_rounds=0"):
        load_params(tmp_path / "params.yaml")
