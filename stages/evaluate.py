"""evaluate: both task models on data/real/test -> metrics/eval.json, confusion matrices.

The oracle (same recipe trained on the real pool's labels) is a reference for how much
accuracy is left to buy; it is trained here, reported, and used by nothing else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from refiner import dataset
from refiner.digits import NUM_CLASSES
from refiner.task import TaskConfig, accuracy, confusion_matrix, load_classifier, predict, train_classifier
from stages import common
from stages.ingest import pool_labels


def score(predicted: np.ndarray, labels: np.ndarray) -> dict:
    matrix = confusion_matrix(predicted, labels, NUM_CLASSES)
    per_class = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
    return {"accuracy": accuracy(predicted, labels),
            "per_class_accuracy": {str(c): float(a) for c, a in enumerate(per_class)},
            "confusion": matrix.tolist()}


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


def evaluate(model_paths: dict[str, Path], test_path: Path, pool_path: Path | None, oracle_config: TaskConfig | None,
             plots_dir: Path, progress: bool = True) -> dict:
    test = dataset.open_dataset(test_path).load()
    results = {name: score(predict(load_classifier(path), test["image"]), test["label"])
               for name, path in model_paths.items()}
    if oracle_config is not None:
        pool = dataset.open_dataset(pool_path).load()
        oracle, _ = train_classifier(pool["image"], pool_labels(pool["id"]), oracle_config, progress=progress)
        results["oracle"] = score(predict(oracle, test["image"]), test["label"])
    for name, result in results.items():
        plot_confusion(np.array(result["confusion"]), f"trained on {name}: {result['accuracy']:.1%} on real",
                       plots_dir / f"confusion-{name}.png")
    return results


def table(results: dict) -> str:
    lines = ["| trained on | accuracy on real test |", "|---|---|"]
    lines += [f"| {name} | {result['accuracy']:.1%} |" for name, result in results.items()]
    return "\n".join(lines)


def main() -> None:
    import mlflow
    from refiner import tracking
    params = common.load_params()
    section = params["evaluate"]
    oracle_config = TaskConfig(**params["train_task"], seed=params["seed"]) if section["oracle"] else None
    models = {name: common.task_model_dir(name) / "model.pt" for name in common.TRAINING_SETS}
    plots_dir = common.PLOTS / "evaluate"
    with tracking.stage_run("evaluate", {**section, "seed": params["seed"]}):
        test = dataset.open_dataset(common.REAL_TEST)
        tracking.log_dataset(test, "input", "real-test")
        results = evaluate(models, common.REAL_TEST, common.REAL_UNLABELED, oracle_config, plots_dir)
        report = {name: {k: v for k, v in r.items() if k != "confusion"} for name, r in results.items()}
        report["gain"] = results["refined"]["accuracy"] - results["synthetic"]["accuracy"]
        common.write_json(common.METRICS / "eval.json", report)
        (common.METRICS / "eval.md").write_text(table(results) + "\n")
        mlflow.log_metrics({f"{name}_accuracy": r["accuracy"] for name, r in results.items()})
        mlflow.log_metric("gain", report["gain"])
        for path in sorted(plots_dir.glob("confusion-*.png")) + [common.METRICS / "eval.md"]:
            mlflow.log_artifact(str(path))
    print(table(results))
    print(f"refined - synthetic: {report['gain']:+.1%}")


if __name__ == "__main__":
    main()
