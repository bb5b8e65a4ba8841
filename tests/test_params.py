"""The typed params: one model, one set of defaults, bad keys refused on every path."""

import subprocess
import sys

import pytest
import torch
import yaml

from refiner.config import SimGANParams
from refiner.errors import ParamsError
from refiner.params import Params, load_params, parse_overrides
from refiner.simgan.trainer import SimGANTrainer, load_refiner
from tests.helpers import ROOT, TINY, make_project, sh, stage_command


def test_params_yaml_states_the_models_defaults():
    """One place for every default: params.yaml says what the models would use anyway."""
    assert load_params().model_dump(by_alias=True) == Params().model_dump(by_alias=True)


def test_lambda_is_the_yaml_spelling_of_lam():
    params = load_params(overrides={"train_refiner.lambda": 0.25})
    assert params.train_refiner.lam == 0.25 and params.section("train_refiner")["lambda"] == 0.25
    assert SimGANParams(lam=3.0).lam == 3.0  # code may use the Python name


def test_refiner_checkpoint_keeps_its_params(tmp_path):
    config = SimGANParams(channels=4, num_blocks=1, disc_layers=[[4, 1]], batch_size=4, lam=0.5,
                          pretrain_refiner_steps=1, pretrain_disc_steps=1, steps=1, history_size=8)
    images = torch.rand(8, 8, 8).numpy()
    trainer = SimGANTrainer(images, images, config, seed=3)
    torch.save(trainer.checkpoint((8, 8)), tmp_path / "r.pt")
    saved = torch.load(tmp_path / "r.pt", weights_only=True)
    assert saved["config"]["lambda"] == 0.5 and saved["seed"] == 3
    assert sum(p.numel() for p in load_refiner(tmp_path / "r.pt").parameters()) == \
        sum(p.numel() for p in trainer.refiner.parameters())


@pytest.mark.parametrize("overrides, message", [
    ({"train_refiner.lamda": 1.0}, r"params.yaml.*: train_refiner\.lamda: Extra inputs are not permitted"),
    ({"train_refiner.steps": "many"}, r"train_refiner\.steps: Input should be a valid integer.*'many'"),
    ({"digits.jitter.max_shear": [1]}, r"digits\.jitter\.max_shear: Input should be a valid number"),
    ({"task": "hand_pose"}, r"task: Input should be 'digits', 'gaze' or 'images'"),
    ({"refine.precision": "fp8"}, r"refine\.precision: Input should be 'fp32' or 'bf16'"),
    ({"nosuchsection.x": 1}, r"nosuchsection: Extra inputs are not permitted"),
    ({"image_encoding": "jpeg"}, r"image_encoding: Input should be 'png' or 'raw'"),
])
def test_bad_params_are_refused_naming_the_dotted_key_and_the_file(overrides, message):
    with pytest.raises(ParamsError, match=message):
        load_params(overrides=overrides)


@pytest.mark.parametrize("overrides, message", [
    ({"task": "gaze", "train_estimator.adaptation": "self_training"},
     r"train_estimator\.adaptation: task gaze has no classes to pseudo-label with "
     r"\(it regresses \['gaze_pitch', 'gaze_yaw'\]\): set it to mean_teacher or none"),
    ({"task": "gaze", "train_estimator.adaptation": "none", "train_refiner.conditional": True},
     r"train_refiner\.conditional: task gaze has no classes"),
])
def test_a_recipe_that_needs_classes_is_refused_for_a_world_without_them(overrides, message):
    from refiner.tasks import task_for
    params = load_params(overrides=overrides)  # valid params: the world's head decides
    with pytest.raises(ParamsError, match=message):
        task_for(params)


def test_one_override_syntax_reads_values_as_yaml():
    assert parse_overrides(["train_refiner.lambda=2", "digits.real=mnist", "train_refiner.disc_layers=[[8, 1]]"]) == {
        "train_refiner.lambda": 2, "digits.real": "mnist", "train_refiner.disc_layers": [[8, 1]]}
    with pytest.raises(ParamsError, match="override 'lambda': expected KEY=VALUE"):
        parse_overrides(["lambda"])


@pytest.mark.parametrize("stage, section, message", [
    ("render", {"render": {"num_image": 10}}, "render.num_image: Extra inputs are not permitted"),
    ("train_refiner", {"train_refiner": {"steps": "many"}}, "train_refiner.steps: Input should be a valid integer"),
    ("evaluate", {"task": "hand_pose"}, "task: Input should be 'digits', 'gaze' or 'images'"),
])
def test_a_stage_command_refuses_bad_params_before_any_work(tmp_path, stage, section, message):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in section.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(stage_command(stage), cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert result.returncode != 0
    assert f"error: params.yaml: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written, no MLflow run


@pytest.mark.parametrize("module", ["stages.render", "stages.ingest", "stages.train_refiner", "stages.refine",
                                    "stages.train_estimator", "stages.evaluate", "flows.pipeline", "refiner.cli"])
def test_every_entry_point_answers_help_without_running(tmp_path, monkeypatch, capsys, module):
    import importlib
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(module).main(["--help"])
    assert exited.value.code == 0 and "usage:" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # nothing written, no MLflow run


@pytest.mark.slow
def test_dvc_exp_run_set_refuses_bad_params(tmp_path):
    env = make_project(tmp_path, TINY)
    front_door = [sys.executable, "-m", "refiner.cli", "run", "--set"]  # simrefinery run --set: dvc exp run -S
    for command, message in [(["dvc", "exp", "run", "-S", "+train_refiner.lamda=1"],
                              "error: params.yaml: train_refiner.lamda: Extra inputs"),
                             (["dvc", "exp", "run", "-S", "train_refiner.steps=many"],
                              "error: params.yaml: train_refiner.steps: Input should"),
                             (["dvc", "exp", "run", "-S", "task=hand_pose"], "'hand_pose' are missing from 'params.yaml'"),
                             ([*front_door, "train_refiner.steps=many"], "error: params.yaml: train_refiner.steps: Input")]:
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode != 0 and message in result.stdout + result.stderr, result.stdout + result.stderr
        sh("git", "checkout", "--", "params.yaml", cwd=tmp_path, env=env)
    # refused at the first stage, before anything was written (DVC itself makes empty output folders)
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file()] == [] and not (tmp_path / "mlflow.db").exists()


def test_flow_command_refuses_a_bad_override(tmp_path):
    result = subprocess.run([sys.executable, "-m", "flows.pipeline", "--set", "train_refiner.lamda=1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "error: params.yaml with overrides ['train_refiner.lamda']: train_refiner.lamda: Extra inputs" in result.stderr


def test_the_default_adaptation_needs_no_class():
    from refiner.tasks import task_for
    params = load_params(overrides={"task": "gaze", "train_refiner.conditional": False})
    assert params.train_estimator.adaptation == "mean_teacher" and not task_for(params).head.has_classes
