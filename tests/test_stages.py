"""Stage functions in-process: determinism, and that real labels never reach training."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from refiner import dataset
from refiner.simgan import load_refiner
from stages import common
from stages.ingest import ingest
from stages.render import render
from stages.train_refiner import config_from_params, load_unlabeled, train_refiner
from stages.train_task import load_training_set

PARAMS = yaml.safe_load((common.PARAMS_FILE).read_text()) if common.PARAMS_FILE.exists() else None


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    return ingest(0.5, 0, root / "unlabeled", root / "test")


def test_render_same_params_same_digest(tmp_path):
    jitter = {"max_rotation_deg": 10.0, "aspect_range": [0.8, 1.2]}
    a = render(30, 7, jitter, tmp_path / "a", progress=False)
    b = render(30, 7, jitter, tmp_path / "b", progress=False)
    c = render(30, 8, jitter, tmp_path / "c", progress=False)
    assert a.digest == b.digest != c.digest
    assert a.manifest["params"]["seed"] == 7


def test_ingest_split_is_stratified_and_unlabelled_pool_has_no_labels(real):
    unlabeled, test = real
    assert unlabeled.num_rows + test.num_rows == 1797
    assert unlabeled.label_columns == [] and "label" not in unlabeled.manifest["schema"]
    assert test.label_columns == ["label"]
    counts = np.bincount(test.load()["label"])
    assert counts.min() >= 85 and counts.max() <= 92  # ~half of each class
    assert not set(unlabeled.load()["id"]) & set(test.load()["id"])


def test_task_training_refuses_real_data(real):
    _, test = real
    with pytest.raises(dataset.DatasetError, match="real data must not train the task model"):
        load_training_set(test.path)


def test_refiner_training_refuses_labelled_real_data(real):
    _, test = real
    with pytest.raises(dataset.DatasetError, match="must be unlabelled"):
        load_unlabeled(test.path)


def test_no_training_stage_depends_on_real_labels():
    pipeline = yaml.safe_load(open("dvc.yaml"))["stages"]
    for name in ("train_refiner", "refine", "train_task"):
        stage = pipeline[name].get("do", pipeline[name])
        assert "data/real/test" not in stage["deps"], name
    assert "data/real/test" in pipeline["evaluate"]["deps"]


def test_params_lambda_maps_to_the_trainer():
    config = config_from_params({"lambda": 0.25, "steps": 3}, seed=4)
    assert config.lam == 0.25 and config.steps == 3 and config.seed == 4


def test_train_refiner_writes_checkpoint_curves_and_samples(real, tmp_path):
    unlabeled, _ = real
    synthetic = render(64, 0, {}, tmp_path / "synthetic", progress=False)
    config = config_from_params({"lambda": 1.0, "channels": 8, "num_blocks": 1, "disc_layers": [[8, 1]],
                                 "batch_size": 16, "pretrain_refiner_steps": 3, "pretrain_disc_steps": 3,
                                 "steps": 4, "history_size": 40, "log_every": 2}, seed=0)
    samples = []
    trainer, log = train_refiner(synthetic.path, unlabeled.path, config, tmp_path / "model", tmp_path / "plots",
                                 progress=False, on_samples=samples.append)
    model = load_refiner(tmp_path / "model" / "refiner.pt", (8, 8))
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    assert torch.allclose(model(x), trainer.refiner.eval()(x))
    assert [e["step"] for e in log if e["phase"] == "adversarial"] == [2, 4]
    assert log[-1]["history_size"] == 40  # the history buffer filled
    assert 0.0 < log[-1]["diversity_ratio"]
    assert (tmp_path / "plots" / "samples.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "losses.csv").read_text().startswith("step,adv_loss")


def test_realism_is_chance_for_the_same_distribution_and_high_for_a_different_one(real):
    from stages.evaluate import realism
    unlabeled, _ = real
    pool = unlabeled.load()["image"]
    shuffled = pool[np.random.default_rng(0).permutation(len(pool))]  # source order groups writers
    half = len(pool) // 2
    assert realism(shuffled[:half], shuffled[half:], seed=0) < 0.6
    assert realism(1.0 - shuffled[:half], shuffled[half:], seed=0) > 0.95


def test_diversity_ratio_is_one_for_identity_and_zero_for_collapse():
    from refiner.simgan import diversity_ratio
    synthetic = np.random.default_rng(0).random((50, 8, 8), dtype=np.float32)
    assert diversity_ratio(synthetic, synthetic) == pytest.approx(1.0)
    collapsed = np.repeat(synthetic[:1], 50, axis=0)  # every output the same image
    assert diversity_ratio(collapsed, synthetic) == 0.0


class ConstantDigit(torch.nn.Module):
    """A real (trivial) task model: always the same digit, with a given confidence logit."""
    def __init__(self, digit: int, logit: float = 10.0):
        super().__init__()
        self.logits = torch.zeros(10)
        self.logits[digit] = logit

    def forward(self, x):
        return self.logits.expand(len(x), 10)


def test_label_free_selection_refuses_a_refiner_that_lost_labels():
    from stages.evaluate import label_kept, real_confidence, selection_score
    images = np.zeros((10, 8, 8), np.float32)
    sets = {"synthetic": {"image": images, "label": np.full(10, 3)},
            "refined": {"image": images, "label": np.r_[np.full(5, 3), np.full(5, 4)]}}
    kept = label_kept([ConstantDigit(3)], sets)
    assert kept == {"synthetic": 1.0, "refined": 0.5}
    sure, unsure = real_confidence([ConstantDigit(3)], images), real_confidence([ConstantDigit(3, 0.0)], images)
    assert sure > 0.99 and abs(unsure - 0.1) < 1e-6
    report = {"label_kept": kept, "real_confidence": {"synthetic": unsure, "refined": sure}}
    assert selection_score(report, 0.97) is None  # half the refined digits changed class
    report["label_kept"] = {"synthetic": 1.0, "refined": 0.98}
    assert selection_score(report, 0.97) == sure
    assert selection_score(report, 0.99) is None


def test_self_training_pseudo_labels_only_the_real_images_the_model_is_sure_of(real):
    from refiner.task import TaskConfig, self_train, train_model
    from refiner.digits import counts_to_unit, render_digits
    _, images, labels = render_digits(300, seed=2, progress=False)
    synthetic = counts_to_unit(images)
    unlabeled = real[0].load()["image"][:200]
    config = TaskConfig(steps=30, eval_every=30, batch_size=32, self_training_rounds=1)
    plain, plain_history = train_model(synthetic, labels, config, progress=False)

    nobody_sure, history, kept = self_train(synthetic, labels, unlabeled, replace(config, pseudo_label_threshold=1.01),
                                            progress=False)
    assert kept == 0.0 and history == plain_history  # no pseudo-label: the same model as plain training
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), nobody_sure.state_dict().values()))

    everyone, history, kept = self_train(synthetic, labels, unlabeled, replace(config, pseudo_label_threshold=0.0),
                                         progress=False)
    assert kept == 1.0
    assert not all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), everyone.state_dict().values()))
