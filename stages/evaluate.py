"""evaluate: both task models on data/real/test -> metrics/eval.json, confusion matrices.

The oracle (same recipe trained on the real pool's labels) is a reference for how much
accuracy is left to buy; it is trained here, reported, and used by nothing else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from refiner import dataset
from refiner.digits import NUM_CLASSES
from refiner.gaze import angular_error_deg
from refiner.task import (TaskConfig, accuracy, confusion_matrix, load_model, predict, predict_gaze, predict_proba,
                          targets)
from stages import common
from stages.ingest import pool_labels
from stages.train_task import task_config, train_seeds


def load_seed_models(directory: Path) -> list:
    """The task models a train_task stage wrote, one per seed."""
    return [load_model(p) for p in sorted(directory.glob("model-seed*.pt"))]


def score(models, images: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy mean and sd over the models (one per seed), and of their ensemble (mean
    probabilities); confusion pooled over the models."""
    probabilities = [predict_proba(model, images) for model in models]
    predictions = [p.argmax(1) for p in probabilities]
    per_seed = [accuracy(p, labels) for p in predictions]
    matrix = sum(confusion_matrix(p, labels, NUM_CLASSES) for p in predictions)
    per_class = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
    return {"accuracy": float(np.mean(per_seed)), "accuracy_sd": float(np.std(per_seed)),
            "accuracy_per_seed": per_seed,
            "ensemble_accuracy": accuracy(np.mean(probabilities, axis=0).argmax(1), labels),
            "per_class_accuracy": {str(c): float(a) for c, a in enumerate(per_class)},
            "confusion": matrix.tolist()}


def realism(fake01: np.ndarray, real01: np.ndarray, seed: int) -> float:
    """Held-out accuracy of a fresh logistic regression telling fake from real by pixels:
    0.5 means indistinguishable. Uses no labels; equal numbers of each, split in half."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    n = min(len(fake01), len(real01))
    rng = np.random.default_rng(seed)
    fake = fake01[rng.choice(len(fake01), n, replace=False)].reshape(n, -1)
    real = real01[rng.choice(len(real01), n, replace=False)].reshape(n, -1)
    x, y = np.concatenate([fake, real]), np.r_[np.zeros(n), np.ones(n)]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    return float(LogisticRegression(max_iter=2000).fit(x_train, y_train).score(x_test, y_test))


def label_kept(synthetic_models, training_sets: dict[str, dict]) -> dict:
    """Label-free check that refinement kept the labels: the models trained on synthetic data
    classify the synthetic images and their refined versions against their (synthetic)
    labels. A refiner that changes digits (mode collapse, too small a lambda) drops the second."""
    return {name: float(np.mean([accuracy(predict(model, rows["image"]), rows["label"]) for model in synthetic_models]))
            for name, rows in training_sets.items()}


def real_confidence(models, real01: np.ndarray) -> float:
    """Mean top-class probability of the task models on the unlabelled real pool: how sure
    they are on real digits (minus the target entropy, in spirit). Needs no label."""
    return float(np.mean([predict_proba(model, real01).max(1).mean() for model in models]))


def label_free(task_models: dict[str, list], training_sets: dict[str, dict], real_pool: np.ndarray,
               seed: int) -> dict:
    """Everything used to choose params, checkpoints and champions: no real label in it."""
    return {"realism": {name: realism(rows["image"], real_pool, seed) for name, rows in training_sets.items()},
            "label_kept": label_kept(task_models["synthetic"], training_sets),
            "real_confidence": {name: real_confidence(models, real_pool) for name, models in task_models.items()}}


def selection_score(report: dict, label_kept_min: float) -> float | None:
    """The label-free rule that chooses profiles (experiments/sweep.py) and champions: a
    refiner that kept the labels (refined label_kept >= label_kept_min x synthetic's) scores
    its task models' confidence on real images; one that lost them is not eligible (None).
    Checked against the renderer variants of the accuracy sweep (README): real-pool confidence
    ranked them as test accuracy did, realism did not (it rewards size fixes, not shapes)."""
    kept = report["label_kept"]
    if kept["refined"] < label_kept_min * kept["synthetic"]:
        return None
    return report["real_confidence"]["refined"]


def plot_confusion(matrix: np.ndarray, title: str, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axis = plt.subplots(figsize=(4.2, 4))
    axis.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        axis.text(col, row, str(value), ha="center", va="center", fontsize=7,
                  color="white" if value > matrix.max() / 2 else "black")
    axis.set(xlabel="predicted", ylabel="true", title=title, xticks=range(NUM_CLASSES), yticks=range(NUM_CLASSES))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def evaluate(task_models: dict[str, list], test_path: Path, pool_path: Path, oracle: tuple[TaskConfig, int] | None,
             plots_dir: Path, progress: bool = True) -> dict:
    test = dataset.open_dataset(test_path).load()
    results = {name: score(models, test["image"], test["label"]) for name, models in task_models.items()}
    if oracle is not None:
        pool = dataset.open_dataset(pool_path).load()
        runs = train_seeds(pool["image"], pool_labels(pool["id"]), *oracle, progress=progress)
        results["oracle"] = score([model for _, model, _ in runs], test["image"], test["label"])
    for name, result in results.items():
        plot_confusion(np.array(result["confusion"]), f"trained on {name}: {result['accuracy']:.1%} on real",
                       plots_dir / f"confusion-{name}.png")
    return results


def table(results: dict, metric: str = "accuracy", title: str = "accuracy on real test",
          cell: str = "{:.1%}") -> str:
    seeds = len(next(iter(results.values()))[f"{metric}_per_seed"])
    lines = [f"| trained on | {title} (mean ± sd, {seeds} seeds) | ensemble of the {seeds} |", "|---|---|---|"]
    lines += [f"| {name} | {cell.format(r[metric])} ± {cell.format(r[f'{metric}_sd'])} "
              f"| {cell.format(r[f'ensemble_{metric}'])} |" for name, r in results.items()]
    return "\n".join(lines)


def promote_champion(models: dict[str, dict], results: dict, score: float | None) -> bool:
    """Tag each task model version with its real-test accuracy (for people to read); the model
    trained on refined data becomes ``champion`` (and its refiner too) when its label-free
    selection score beats the current champion's: real labels report, they never choose."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from refiner import tracking
    client = MlflowClient()
    for name, record in models.items():
        if record and name in results:
            client.set_model_version_tag(tracking.TASK_MODEL, record["version"], "real_test_accuracy",
                                         f"{results[name]['accuracy']:.4f}")
    candidate = models.get("refined")
    if not candidate or score is None:
        return False
    client.set_model_version_tag(tracking.TASK_MODEL, candidate["version"], "selection_score", f"{score:.6f}")
    try:
        champion = client.get_model_version_by_alias(tracking.TASK_MODEL, "champion")
        best = float(champion.tags.get("selection_score", "-1"))
    except MlflowException:
        best = -1.0
    if score <= best:
        return False
    client.set_registered_model_alias(tracking.TASK_MODEL, "champion", candidate["version"])
    if models.get("refiner"):
        client.set_registered_model_alias(tracking.REFINER_MODEL, "champion", models["refiner"]["version"])
    return True


def score_gaze(models, images: np.ndarray, gaze: np.ndarray) -> dict:
    """Mean angular error in degrees: mean and sd over the models, of their ensemble (mean
    prediction), and every error (for the histogram)."""
    predictions = [predict_gaze(model, images) for model in models]
    errors = [angular_error_deg(p, gaze) for p in predictions]
    per_seed = [float(e.mean()) for e in errors]
    return {"error_deg": float(np.mean(per_seed)), "error_deg_sd": float(np.std(per_seed)),
            "error_deg_per_seed": per_seed,
            "ensemble_error_deg": float(angular_error_deg(np.mean(predictions, axis=0), gaze).mean()),
            "errors": np.concatenate(errors)}


def plot_error_histograms(results: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axis = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(0, max(float(np.percentile(r["errors"], 99)) for r in results.values()), 40)
    for name, result in results.items():
        axis.hist(result["errors"], bins=bins, histtype="step", linewidth=1.5,
                  label=f"{name}: {result['error_deg']:.1f}°")
    axis.set(xlabel="angular error on the real test split (degrees)", ylabel="eyes")
    axis.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def gaze_table(results: dict) -> str:
    return table(results, "error_deg", "mean angular error on real test", "{:.2f}°")


def run_gaze(params: dict) -> dict:
    """The gaze task's evaluation: angular error instead of accuracy, an error histogram
    instead of confusion matrices. No champion is promoted: the label-free selection score
    needs class confidences."""
    import mlflow
    from refiner import tracking
    section = params["evaluate"]
    models = {name: common.task_model_dir(name) for name in common.TRAINING_SETS}
    with tracking.stage_run("evaluate", {**section, "seed": params["seed"], "task": "gaze"}) as mlflow_run:
        test = dataset.open_dataset(common.REAL_TEST)
        tracking.log_dataset(test, "input", "real-test")
        for directory in [*models.values(), common.REFINER_DIR]:
            tracking.log_model_input(directory)
        rows = test.load()
        task_models = {name: load_seed_models(directory) for name, directory in models.items()}
        results = {name: score_gaze(m, rows["image"], targets(rows, "gaze")) for name, m in task_models.items()}
        if section["oracle"]:
            pool = dataset.open_dataset(common.REAL_UNLABELED).load()
            runs = train_seeds(pool["image"], pool_labels(pool["id"], params).astype(np.float32),
                               *task_config(params))
            results["oracle"] = score_gaze([model for _, model, _ in runs], rows["image"], targets(rows, "gaze"))
        plot = plot_error_histograms(results, common.PLOTS / "evaluate" / "gaze-errors.png")
        report = {name: {k: v for k, v in r.items() if k != "errors"} for name, r in results.items()}
        report["gain_deg"] = results["synthetic"]["error_deg"] - results["refined"]["error_deg"]
        real_pool = dataset.open_dataset(common.REAL_UNLABELED).load()["image"]
        training_sets = {name: dataset.open_dataset(path).load() for name, path in common.TRAINING_SETS.items()}
        report["realism"] = {name: realism(r["image"], real_pool, params["seed"]) for name, r in training_sets.items()}
        report["label_kept_error_deg"] = {  # synthetic-trained models on synthetic vs refined eyes
            name: score_gaze(task_models["synthetic"], r["image"], targets(r, "gaze"))["error_deg"]
            for name, r in training_sets.items()}
        common.write_json(common.METRICS / "eval.json", report)
        (common.METRICS / "eval.md").write_text(gaze_table(results) + "\n")
        mlflow.log_metrics({f"{name}_error_deg": r["error_deg"] for name, r in results.items()})
        mlflow.log_metrics({f"realism_{name}": value for name, value in report["realism"].items()})
        for path in (plot, common.METRICS / "eval.md"):
            mlflow.log_artifact(str(path))
    print(gaze_table(results))
    print(f"synthetic - refined error: {report['gain_deg']:+.2f} degrees")
    return {"table": gaze_table(results), "report": report, "mlflow_run_id": mlflow_run.info.run_id}


def run(params: dict) -> dict:
    if params["task"] == "gaze":
        return run_gaze(params)
    import mlflow
    from refiner import tracking
    section = params["evaluate"]
    oracle = task_config(params) if section["oracle"] else None
    models = {name: common.task_model_dir(name) for name in common.TRAINING_SETS}
    plots_dir = common.PLOTS / "evaluate"
    with tracking.stage_run("evaluate", {**section, "seed": params["seed"]}) as mlflow_run:
        test = dataset.open_dataset(common.REAL_TEST)
        tracking.log_dataset(test, "input", "real-test")
        used = {name: tracking.log_model_input(directory) for name, directory in models.items()}
        used["refiner"] = tracking.log_model_input(common.REFINER_DIR)
        task_models = {name: load_seed_models(directory) for name, directory in models.items()}
        results = evaluate(task_models, common.REAL_TEST, common.REAL_UNLABELED, oracle, plots_dir)
        report = {name: {k: v for k, v in r.items() if k != "confusion"} for name, r in results.items()}
        report["gain"] = results["refined"]["accuracy"] - results["synthetic"]["accuracy"]
        real_pool = dataset.open_dataset(common.REAL_UNLABELED).load()["image"]
        training_sets = {name: dataset.open_dataset(path).load() for name, path in common.TRAINING_SETS.items()}
        report.update(label_free(task_models, training_sets, real_pool, params["seed"]))
        report["selection_score"] = selection_score(report, section["label_kept_min"])
        common.write_json(common.METRICS / "eval.json", report)
        (common.METRICS / "eval.md").write_text(table(results) + "\n")
        mlflow.log_metrics({f"{name}_accuracy": r["accuracy"] for name, r in results.items()})
        mlflow.log_metric("gain", report["gain"])
        for metric in ("realism", "label_kept", "real_confidence"):
            mlflow.log_metrics({f"{metric}_{name}": value for name, value in report[metric].items()})
        if promote_champion(used, results, report["selection_score"]):
            print("evaluate: the task model trained on refined data is the new champion")
        for path in sorted(plots_dir.glob("confusion-*.png")) + [common.METRICS / "eval.md"]:
            mlflow.log_artifact(str(path))
    print(table(results))
    print(f"refined - synthetic: {report['gain']:+.1%}")
    print("realism (real-vs-fake logistic regression, 0.5 = indistinguishable): "
          + ", ".join(f"{name} {value:.3f}" for name, value in report["realism"].items()))
    print("label kept (synthetic-trained models on refined images, synthetic labels): "
          f"{report['label_kept']['refined']:.3f} (on the synthetic images: {report['label_kept']['synthetic']:.3f})")
    return {"table": table(results), "report": report, "mlflow_run_id": mlflow_run.info.run_id}


def main() -> None:
    run(common.load_params())


if __name__ == "__main__":
    main()
