"""Stage functions and the library they call, in-process: determinism, that real labels never
reach training, and the label-free figures that choose among refiners."""

import os

import numpy as np
import pytest
import torch

from refiner import data
from refiner.estimator.training import adapted, predict, train_model
from refiner.evaluation import label_free
from refiner.evaluation.report import PerSet, Report
from refiner.params import load_params
from refiner.simgan.conditioning import frozen_estimator, pool_classes
from refiner.simgan.trainer import diversity_ratio, load_refiner
from stages.ingest import ingest
from stages.render import render
from stages.train_refiner import train_refiner
from tests.helpers import world

DIGITS_WORLD = world("digits")
DIGITS = DIGITS_WORLD.head


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    return ingest(load_params(), DIGITS_WORLD, root / "unlabeled", root / "test", root / "pool_labels.parquet")


def test_render_same_params_same_digest(tmp_path):
    params = load_params(overrides={"render.num_images": 30, "seed": 7})
    a = render(params, DIGITS_WORLD, tmp_path / "a")
    b = render(params, DIGITS_WORLD, tmp_path / "b")
    c = render(params.model_copy(update={"seed": 8}), DIGITS_WORLD, tmp_path / "c")
    assert a.digest == b.digest != c.digest
    assert a.manifest["params"]["seed"] == 7 and a.manifest["params"]["digits"]["handwritten_fraction"] == 0.5
    assert a.manifest["schema"]["label"] == "int64"  # the task's label schema, in the manifest


def test_ingest_split_is_stratified_and_unlabelled_pool_has_no_labels(real):
    unlabeled, test = real
    assert unlabeled.num_rows + test.num_rows == 1797
    assert unlabeled.label_columns == [] and "label" not in unlabeled.manifest["schema"]
    assert test.label_columns == ["label"]
    counts = np.bincount(test.load()["label"])
    assert counts.min() >= 85 and counts.max() <= 92  # ~half of each class
    assert not set(unlabeled.load()["id"]) & set(test.load()["id"])


def test_ingest_keeps_the_pools_labels_apart_for_the_oracle(real):
    import pyarrow.parquet as pq
    from refiner.tasks.digits.renderer import load_real_digits
    unlabeled, _ = real
    table = pq.read_table(unlabeled.path.parent / "pool_labels.parquet")
    assert table.column("id").to_pylist() == list(unlabeled.load()["id"])
    ids, _, labels = load_real_digits()
    truth = dict(zip(ids, labels))
    assert table.column("label").to_pylist() == [truth[i] for i in table.column("id").to_pylist()]


def test_estimator_training_refuses_real_data(real):
    _, test = real
    with pytest.raises(data.DatasetError, match="real data must not train the estimator"):
        data.open_training_set(test.path, DIGITS_WORLD.labels)


def test_estimator_training_refuses_data_without_the_tasks_labels(real):
    unlabeled, _ = real
    with pytest.raises(data.DatasetError, match=r"has no \['gaze_pitch', 'gaze_yaw'\] label column"):
        data.open_training_set(_relabelled(unlabeled), world("gaze").labels)


def _relabelled(unlabeled):
    """A copy of the pool written as if a simulator had made it, with digit labels."""
    rows = unlabeled.load()
    path = unlabeled.path.parent / "as-synthetic"
    data.write_dataset(path, rows["id"], data.to_uint8(rows["image"]), {"label": np.zeros(len(rows["id"]), int)},
                          source="synthetic", producer="test")
    return path


def test_refiner_training_refuses_labelled_real_data(real):
    _, test = real
    with pytest.raises(data.DatasetError, match="must be unlabelled"):
        data.open_unlabeled(test.path)


def test_no_training_stage_depends_on_real_labels():
    from stages.common import dvc_stages
    deps = {stage.name: {str(dep.def_path) for dep in stage.deps} for stage in dvc_stages()}
    real_labels = {"data/real/test", "data/real/pool_labels.parquet"}
    assert [name for name, used in deps.items() if used & real_labels] == ["evaluate"]
    assert real_labels <= deps["evaluate"]


def test_train_refiner_writes_checkpoint_curves_and_samples(real, tmp_path):
    unlabeled, _ = real
    params = load_params(overrides={"render.num_images": 64, "train_refiner": {
        "lambda": 1.0, "channels": 8, "num_blocks": 1, "disc_layers": [[8, 1]], "batch_size": 16,
        "pretrain_refiner_steps": 3, "pretrain_disc_steps": 3, "steps": 4, "history_size": 40, "log_every": 2}})
    synthetic = render(params, DIGITS_WORLD, tmp_path / "synthetic").load()["image"]
    samples = []
    plots = tmp_path / "plots"
    trainer, log = train_refiner(synthetic, unlabeled.load()["image"], params.train_refiner, 0, tmp_path / "model",
                                 plots / "losses.csv", plots / "samples.png", progress=False, on_samples=samples.append)
    model = load_refiner(tmp_path / "model" / "refiner.pt", (8, 8))
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    assert torch.allclose(model(x), trainer.refiner.eval()(x))
    assert [e["step"] for e in log if e["phase"] == "adversarial"] == [2, 4]
    assert log[-1]["history_size"] == 40  # the history buffer filled
    assert log[-1]["diversity_ratio"] == pytest.approx(diversity_ratio(trainer.refine(trainer.probe), trainer.probe))
    assert (tmp_path / "plots" / "samples.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "losses.csv").read_text().startswith("step,adv_loss")


def test_conditional_discriminator_gets_the_pool_balanced_to_the_synthetic_class_shares(real, tmp_path):
    from refiner.estimator.training import predict
    unlabeled, _ = real
    params = load_params(overrides={"render.num_images": 200, "train_refiner.semantic_steps": 30})
    assert params.train_refiner.conditional  # the default
    synthetic = render(params, DIGITS_WORLD, tmp_path / "synthetic").load()
    targets = DIGITS.targets(synthetic)
    estimator = frozen_estimator(DIGITS_WORLD, params.train_refiner, synthetic["image"], targets, params.seed,
                                 progress=False)
    pool = unlabeled.load()["image"]
    synthetic_classes, classes, num_classes = pool_classes(DIGITS_WORLD, params.train_refiner, estimator, targets, pool)
    assert num_classes == 10 and np.array_equal(synthetic_classes, synthetic["label"]) and len(classes) == len(pool)
    prior = np.bincount(synthetic_classes, minlength=10) / len(synthetic_classes)
    balanced = np.abs(np.bincount(classes, minlength=10) / len(pool) - prior).max()
    argmax = np.abs(np.bincount(predict(DIGITS, estimator, pool).argmax(1), minlength=10) / len(pool) - prior).max()
    assert balanced < argmax / 2  # a 30-step estimator's argmax strays far from the shares (0.51 measured)
    off = load_params(overrides={"train_refiner.conditional": False}).train_refiner
    assert pool_classes(DIGITS_WORLD, off, estimator, targets, pool) is None  # the paper's discriminator


def test_realism_is_chance_for_the_same_distribution_and_high_for_a_different_one(real):
    unlabeled, _ = real
    pool = unlabeled.load()["image"]
    shuffled = pool[np.random.default_rng(0).permutation(len(pool))]  # source order groups writers
    half = len(pool) // 2
    assert label_free.realism(shuffled[:half], shuffled[half:], seed=0) < 0.6
    assert label_free.realism(1.0 - shuffled[:half], shuffled[half:], seed=0) > 0.95


def test_diversity_ratio_is_one_for_identity_and_zero_for_collapse():
    synthetic = np.random.default_rng(0).random((50, 8, 8), dtype=np.float32)
    assert diversity_ratio(synthetic, synthetic) == pytest.approx(1.0)
    collapsed = np.repeat(synthetic[:1], 50, axis=0)  # every output the same image
    assert diversity_ratio(collapsed, synthetic) == 0.0


class ConstantDigit(torch.nn.Module):
    """A real (trivial) estimator: always the same digit, with a given confidence logit."""
    def __init__(self, digit: int, logit: float = 10.0):
        super().__init__()
        self.logits = torch.zeros(10)
        self.logits[digit] = logit

    def forward(self, x):
        return self.logits.expand(len(x), 10)


def test_label_free_selection_refuses_a_refiner_that_lost_labels():
    images = np.zeros((10, 8, 8), np.float32)
    sets = {"synthetic": (images, np.full(10, 3)), "refined": (images, np.r_[np.full(5, 3), np.full(5, 4)])}
    kept = label_free.label_kept(DIGITS, [ConstantDigit(3)], sets)
    assert kept == {"synthetic": 1.0, "refined": 0.5}
    sure = DIGITS.confidence([predict(DIGITS, ConstantDigit(3), images)])
    unsure = DIGITS.confidence([predict(DIGITS, ConstantDigit(3, 0.0), images)])
    assert sure > 0.99 and abs(unsure - 0.1) < 1e-6
    report = regression_report(label_kept=PerSet(**kept), real_confidence=PerSet(synthetic=unsure, refined=sure),
                               reverse_score=PerSet(synthetic=0.5, refined=0.7), higher_is_better=True)
    assert label_free.selection_score(report, 0.97) is None  # half the refined digits changed class
    report = report.model_copy(update={"label_kept": PerSet(synthetic=1.0, refined=0.98)})
    assert label_free.selection_score(report, 0.97) == 0.7
    assert label_free.selection_score(report, 0.99) is None


def regression_report(**figures) -> Report:
    return Report(realism=PerSet(synthetic=0.9, refined=0.8), **figures)


def test_a_refiner_that_makes_images_less_real_is_warned_about(capsys):
    from stages.evaluate import REALISM_WORSE, print_label_free
    print_label_free(Report(realism=PerSet(synthetic=0.845, refined=0.845 + REALISM_WORSE + 0.01)))
    assert "WARNING evaluate: the refined images are easier to tell from the real pool" in capsys.readouterr().out
    print_label_free(Report(realism=PerSet(synthetic=0.845, refined=0.845 + REALISM_WORSE - 0.01)))
    assert "WARNING" not in capsys.readouterr().out


def test_label_free_selection_for_classes_is_class_realism_with_no_gate():
    """Rule 4: lower class realism chooses, whatever the synthetic-trained estimators say of
    the refined images (their agreement is what a refiner towards the real classes lowers)."""
    report = regression_report(class_realism=PerSet(synthetic=0.90, refined=0.79), higher_is_better=True,
                               label_kept=PerSet(synthetic=0.91, refined=0.80),
                               reverse_score=PerSet(synthetic=0.7, refined=0.66))
    assert label_free.selection_score(report, 0.97) == -0.79  # rule 2 would refuse it: 0.80 < 0.97 x 0.91
    closer = report.model_copy(update={"class_realism": PerSet(synthetic=0.90, refined=0.70)})
    assert label_free.selection_score(closer, 0.97) > label_free.selection_score(report, 0.97)
    no_classes = report.model_copy(update={"class_realism": None})
    assert label_free.selection_score(no_classes, 0.97) is None  # no classes: rule 2, and 0.80 < 0.97 x 0.91


def test_a_pipeline_run_is_named_by_its_invocation_to_the_second(tmp_path, monkeypatch):
    """Real MLflow store (SQLite): `simrefinery run`'s parent run carries its whole time stamp
    (cut to 8 characters, every parent was "pipeline-run-2026"); one per invocation."""
    import mlflow
    from refiner.tracking import PIPELINE_ID_ENV, runs
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        client = mlflow.MlflowClient()
        experiment = client.create_experiment("names")
        names = []
        for stamp in ("run-20261207T215100Z", "run-20261207T215101Z", "run-20261207T215101Z"):
            monkeypatch.setenv(PIPELINE_ID_ENV, stamp)
            names.append(client.get_run(runs.pipeline_parent(experiment, tmp_path)).info.run_name)
        assert names == ["pipeline-run-20261207T215100Z", "pipeline-run-20261207T215101Z", "pipeline-run-20261207T215101Z"]
        assert len(client.search_runs([experiment])) == 2  # the second stage of an invocation joins its parent
    finally:
        mlflow.set_tracking_uri(previous)



def test_a_run_is_dirty_for_changed_code_or_params_not_for_the_results_a_run_rewrites(tmp_path):
    """A real git repository: `make run` rewrites dvc.lock, metrics/ and plots/, which lineage
    must not take for a change to the code (every run was "dirty"); a change to code or params is one."""
    import subprocess
    from refiner.tracking.runs import git_state

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)
    for name in ("dvc.lock", "metrics/eval.json", "plots/refiner/losses.csv", "params.yaml", "stages/train.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("0\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "first")
    for name in ("dvc.lock", "metrics/eval.json", "plots/refiner/losses.csv"):
        (tmp_path / name).write_text("1\n")
    assert git_state(tmp_path)["git.dirty"] == "false"
    for name in ("params.yaml", "stages/train.py"):
        (tmp_path / name).write_text("1\n")
        assert git_state(tmp_path)["git.dirty"] == "true"
        git("checkout", "--", name)

def test_the_champion_moves_by_the_selection_score_within_one_rule(tmp_path):
    """Real MLflow registry (SQLite). Scores of two rules do not compare: a champion chosen
    by reverse validation gives way to the first candidate scored by class realism."""
    import mlflow
    from refiner import tracking
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        client = mlflow.MlflowClient()
        client.create_registered_model(tracking.ESTIMATOR_MODEL)
        versions = [client.create_model_version(tracking.ESTIMATOR_MODEL, source=str(tmp_path)).version
                    for _ in range(4)]

        def promote(index, score, rule):
            return tracking.promote_champion({"refined": {"version": versions[index]}}, {"refined": 0.9}, score, rule)
        assert promote(0, 0.73, "reverse_validation")
        assert promote(1, -0.79, "class_realism")  # though -0.79 < 0.73
        assert not promote(2, -0.80, "class_realism")
        assert promote(3, -0.70, "class_realism")
        champion = client.get_model_version_by_alias(tracking.ESTIMATOR_MODEL, "champion")
        assert champion.version == versions[3] and champion.tags["selection_rule"] == "class_realism"
        assert champion.tags["class_realism"] == "0.7000"  # the figure as the report has it, not minus it
        assert champion.description.startswith("chosen by class realism: 0.7000, lower is better; the class realism")
        assert "label-free selection score" in client.get_registered_model(tracking.ESTIMATOR_MODEL).description
    finally:
        mlflow.set_tracking_uri(previous)


# a run in the project at argv[1] logs a file artifact; prints its run id, then every run's artifact URI
LOG_A_RUN = """
import sys, mlflow
from pathlib import Path
from refiner.tracking import runs
root = Path(sys.argv[1])
experiment = runs.setup(root)
with mlflow.start_run(experiment_id=experiment) as run:
    (root / "note.txt").write_text(str(root))
    mlflow.log_artifact(str(root / "note.txt"))
print(run.info.run_id)
print(*sorted(r.info.artifact_uri for r in mlflow.search_runs([experiment], output_format="list")))
"""


def test_a_copied_project_writes_and_reads_its_own_artifacts_not_the_originals(tmp_path):
    """MLflow records absolute artifact URIs; a copy of the project must not write into the original."""
    import shutil
    import subprocess
    import sys
    from tests.helpers import ROOT

    def log_a_run(root):
        out = subprocess.run([sys.executable, "-c", LOG_A_RUN, str(root)], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": ""}, timeout=300)
        run_id, uris = out.stdout.splitlines()
        return run_id, uris.split(), out.stderr
    first, _, _ = log_a_run(tmp_path / "original")
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    shutil.rmtree(tmp_path / "original")
    second, uris, said = log_a_run(tmp_path / "copy")
    assert "the project was copied or moved" in said
    assert not (tmp_path / "original").exists()  # nothing written into the original's place
    copy = (tmp_path / "copy" / "mlartifacts").resolve().as_uri()
    assert len(uris) == 2 and all(uri.startswith(copy + "/") for uri in uris)
    assert (tmp_path / "copy" / "mlartifacts" / first / "artifacts" / "note.txt").is_file()  # the old run's, found
    assert (tmp_path / "copy" / "mlartifacts" / second / "artifacts" / "note.txt").is_file()


def test_class_realism_tells_real_digits_under_wrong_classes_from_real_digits_under_their_own(real):
    """The pool's classes come from a synthetic-trained estimator (balanced), never from labels:
    real test digits under their own labels (a perfect refiner) look like the pool's digits of
    that class; the same images under a neighbour's label (a refiner that changed every digit)
    do not, though pixel by pixel they are the same real images."""
    from refiner.tasks.digits.renderer import counts_to_unit, render_digits
    _, images, labels = render_digits(1000, seed=3, progress=False)
    synthetic = (counts_to_unit(images), labels)
    recipe = load_params().train_estimator.model_copy(update={"steps": 300, "eval_every": 300, "batch_size": 64})
    trained, _ = train_model(DIGITS, *synthetic, recipe, seed=0, progress=False)
    test = real[1].load()
    perfect = (test["image"], DIGITS.targets(test))
    changed = (test["image"], (DIGITS.targets(test) + 1) % 10)
    pool = real[0].load()["image"]
    sets = {"synthetic": synthetic, "perfect": perfect, "changed": changed}
    scores = label_free.class_realism(DIGITS, [trained], sets, pool, seed=0)
    pixels_only = {name: label_free.realism(images, pool, 0) for name, (images, _) in sets.items()}
    assert pixels_only["perfect"] == pixels_only["changed"] < 0.65  # plain realism cannot see the classes
    assert scores["perfect"] < 0.7 < scores["changed"], scores
    assert scores["perfect"] < scores["synthetic"], scores
    assert label_free.class_realism(world("gaze").head, [trained], sets, pool, seed=0) is None


def test_reverse_validation_scores_models_by_how_well_their_real_labels_transfer_back(real):
    from refiner.tasks.digits.renderer import counts_to_unit, render_digits
    _, images, labels = render_digits(300, seed=2, progress=False)
    synthetic = (counts_to_unit(images), labels)
    pool = real[0].load()["image"][:300]
    recipe = load_params().train_estimator.model_copy(update={"steps": 300, "eval_every": 300, "batch_size": 64})
    trained, _ = train_model(DIGITS, *synthetic, recipe, seed=0, progress=False)
    # the reverse models train a share of the recipe's steps: give them the 300 the forward one had
    recipe = recipe.model_copy(update={"steps": round(300 / label_free.REVERSE_SHARE)})
    good = label_free.reverse_score(DIGITS, [trained], pool, synthetic, recipe, seed=0)
    always_three = label_free.reverse_score(DIGITS, [ConstantDigit(3)], pool, synthetic, recipe, seed=0)
    assert always_three == pytest.approx(0.1)  # a reverse model that learnt "3" gets the 3s of a balanced set
    assert good > always_three + 0.15


def test_label_free_selection_for_an_error_metric_refuses_a_refiner_whose_error_grew():
    report = regression_report(label_kept=PerSet(synthetic=4.0, refined=4.1), higher_is_better=False,
                               reverse_score=PerSet(synthetic=-2.5, refined=-2.0))
    assert label_free.selection_score(report, 0.97) == -2.0  # 4.1 <= 4 / 0.97
    report = report.model_copy(update={"label_kept": PerSet(synthetic=4.0, refined=4.5)})
    assert label_free.selection_score(report, 0.97) is None


def test_regression_confidence_is_higher_when_the_models_agree():
    gaze = world("gaze").head
    base = np.random.default_rng(0).uniform(-0.3, 0.3, (50, 2))
    agree = [base, base + 0.001]
    disagree = [base, base + 0.2]
    assert gaze.confidence(agree) > gaze.confidence(disagree)
    assert gaze.confidence([base, base]) == pytest.approx(0.0, abs=1e-4)  # degrees


def test_self_training_pseudo_labels_only_the_real_images_the_model_is_sure_of(real):
    from refiner.tasks.digits.renderer import counts_to_unit, render_digits
    _, images, labels = render_digits(300, seed=2, progress=False)
    synthetic = counts_to_unit(images)
    unlabeled = real[0].load()["image"][:200]
    config = load_params().train_estimator.model_copy(update={"steps": 30, "eval_every": 30, "batch_size": 32,
                                                              "adaptation": "self_training", "self_training_rounds": 1})
    plain, plain_history = train_model(DIGITS, synthetic, labels, config, seed=0, progress=False)

    nobody_sure, history, kept, first = adapted(DIGITS, synthetic, labels, unlabeled,
                                                config.model_copy(update={"pseudo_label_threshold": 1.01}), 0, False)
    assert kept == 0.0 and history == plain_history  # no pseudo-label: the same model as plain training
    assert same_weights(plain, nobody_sure) and same_weights(first, nobody_sure)

    everyone, history, kept, first_everyone = adapted(DIGITS, synthetic, labels, unlabeled,
                                                      config.model_copy(update={"pseudo_label_threshold": 0.0}), 0, False)
    assert kept == 1.0
    # the model before self-training is kept: the same as plain training (evaluate's refinery gain uses it)
    assert same_weights(plain, first_everyone) and not same_weights(plain, everyone)


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_mean_teacher_learns_from_the_views_its_teacher_is_sure_of_and_keeps_the_labelled_model(real):
    from refiner.tasks.digits.renderer import counts_to_unit, render_digits
    _, images, labels = render_digits(300, seed=2, progress=False)
    synthetic, unlabeled = counts_to_unit(images), real[0].load()["image"][:200]
    config = load_params().train_estimator.model_copy(update={
        "steps": 30, "eval_every": 10, "batch_size": 32, "adaptation": "mean_teacher", "teacher_steps": 20})
    plain, _ = train_model(DIGITS, synthetic, labels, config, seed=0, progress=False)
    untaught, _, kept, first = adapted(DIGITS, synthetic, labels, unlabeled,
                                       config.model_copy(update={"consistency_weight": 0.0}), 0, False)
    assert same_weights(first, plain) and not same_weights(untaught, plain)  # the labelled model, then more steps
    nobody_sure, _, kept, _ = adapted(DIGITS, synthetic, labels, unlabeled,
                                      config.model_copy(update={"pseudo_label_threshold": 1.01}), 0, False)
    assert kept == 0.0 and same_weights(nobody_sure, untaught)  # a teacher sure of nothing teaches nothing
    taught, _, kept, _ = adapted(DIGITS, synthetic, labels, unlabeled,
                                 config.model_copy(update={"pseudo_label_threshold": 0.0}), 0, False)
    assert kept == 1.0 and not same_weights(taught, untaught)
    again, *_ = adapted(DIGITS, synthetic, labels, unlabeled,
                        config.model_copy(update={"pseudo_label_threshold": 0.0}), 0, False)
    assert same_weights(again, taught)  # same seed, same teacher


def test_a_view_is_drawn_per_image_and_stays_an_image():
    from refiner.estimator.training import augmented_view
    batch = torch.rand(8, 1, 12, 12)
    first = augmented_view(batch, 1, torch.Generator().manual_seed(0))
    assert first.shape == batch.shape and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, augmented_view(batch, 1, torch.Generator().manual_seed(0)))
    same_image = augmented_view(batch[:1].repeat(8, 1, 1, 1), 1, torch.Generator().manual_seed(1))
    assert (same_image[1:] - same_image[:1]).abs().amax(dim=(1, 2, 3)).min() > 0.01  # each copy its own view


def test_a_regression_head_is_taught_by_the_teachers_outputs_and_is_sure_of_every_image():
    gaze = world("gaze").head
    outputs, taught = torch.tensor([[0.1, 0.2], [0.0, -0.1]]), torch.tensor([[0.1, 0.0], [0.3, -0.1]])
    assert gaze.consistency(outputs, taught, None, 0.9).item() == pytest.approx(gaze.loss(outputs, taught).item())
    assert gaze.sure(taught.numpy(), 0.9).all()
