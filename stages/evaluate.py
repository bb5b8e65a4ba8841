"""evaluate: the estimators on data/real/test -> metrics/eval.json, metrics/eval.md, plots/evaluate/.

The only stage that reads real labels: the test split's, and the pool's for the oracle (the
same recipe trained on the real pool's labels, a reference for how much is left to buy; it
is trained here, reported, and used by nothing else). It also computes the label-free
figures (realism, label kept, real-pool confidence) and the selection score that moves the
MLflow ``champion`` alias. Without a labelled real test set, or without an estimator that
fits the task's labels, it reports the label-free figures only, and says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from refiner import dataset, evaluation
from refiner.estimator import load_model, train_seeds
from refiner.params import Params
from refiner.simgan import diversity_ratio
from refiner.tasks import task_for
from stages import common


def load_estimators(directory: Path, kind: str = "model") -> list:
    """The models a train_estimator stage wrote, one per seed: ``model`` (end to end) or
    ``plain`` (before self-training; the same files when self-training was off)."""
    paths = sorted(directory.glob(f"{kind}-seed*.pt")) or sorted(directory.glob("model-seed*.pt"))
    return [load_model(p)[1] for p in paths]


def pool_targets(task, pool_ids: np.ndarray, path: Path) -> np.ndarray | None:
    """The real pool's labels in the pool's order, or None where the source had none."""
    table = pq.read_table(path)
    if table.num_rows == 0:
        return None
    by_id = {row_id: index for index, row_id in enumerate(table.column("id").to_pylist())}
    order = np.array([by_id[row_id] for row_id in pool_ids])
    labels = {name: dataset.label_numpy(table.column(name))[order] for name in task.test_labels.names}
    return task.targets(labels)


def open_inputs(task, params: Params) -> dict[str, dataset.ImageDataset]:
    """Every dataset evaluate reads, validated once."""
    test = {"real-test": dataset.validate(common.REAL_TEST, task.bad_labels)} if task.has_real_test(params) else {}
    return {**test, "real-unlabeled": dataset.open_unlabeled(common.REAL_UNLABELED),
            **{name: dataset.open_training_set(path, task.labels, task.bad_labels)
               for name, path in common.TRAINING_SETS.items()}}


def evaluate(params: Params, inputs: dict[str, dataset.ImageDataset], estimators: dict[str, list],
             plain: dict[str, list], plots_dir: Path, progress: bool = True) -> dict:
    """The whole report: real-test results per training set (and the oracle), the refinery
    gain (``plain``: the estimators before self-training) for our estimator and for a
    scikit-learn one, the label-free figures and the selection score. Writes the task's plots."""
    task = task_for(params)
    pool = inputs["real-unlabeled"].load()
    if not task.learns_labels or "real-test" not in inputs:
        return label_free_only(params, task, inputs, estimators, plain, pool["image"])
    test = inputs["real-test"].load()
    test_targets = task.targets(test)
    results = {name: evaluation.score(task, models, test["image"], test_targets) for name, models in estimators.items()}
    oracle_targets = pool_targets(task, pool["id"], common.POOL_LABELS) if params.evaluate.oracle else None
    if params.evaluate.oracle and oracle_targets is None:
        print(f"evaluate: {common.POOL_LABELS} is empty (the real pool's source is unlabelled): no oracle")
    if oracle_targets is not None:
        runs = train_seeds(task, pool["image"], oracle_targets, params.train_estimator, params.seed, progress)
        results["oracle"] = evaluation.score(task, [run.model for run in runs], test["image"], test_targets)
    plots = task.plot(results, plots_dir)
    report = {name: evaluation.for_json(result) for name, result in results.items()}
    training_sets = {}
    for name in common.TRAINING_SETS:
        rows = inputs[name].load()
        training_sets[name] = (rows["image"], task.targets(rows))
    gain = evaluation.refinery_gain(task, plain, test["image"], test_targets)
    baseline = evaluation.baseline_gain(task, training_sets, test["image"], test_targets)
    end_to_end = evaluation.end_to_end_gain(task, results)
    report.update(metric=task.metric.name, refinery_gain=gain, baseline=baseline, end_to_end_gain=end_to_end["gain"],
                  **evaluation.label_free(task, estimators, plain, training_sets, pool["image"],
                                          params.train_estimator, params.seed))
    report["selection_score"] = evaluation.selection_score(report, params.evaluate.label_kept_min,
                                                           task.metric.higher_is_better)
    return {"results": results, "report": report, "table": evaluation.table(task, results, gain, end_to_end, baseline),
            "plots": plots}


def label_free_only(params: Params, task, inputs, estimators, plain, pool01) -> dict:
    """No labelled real test set or no estimator: realism and diversity, plus, with an
    estimator, the label-free figures and the selection score."""
    images = {name: inputs[name].load() for name in common.TRAINING_SETS}
    sample = np.random.default_rng(params.seed).permutation(len(images["synthetic"]["image"]))[:256]
    report = {"realism": {name: evaluation.realism(rows["image"], pool01, params.seed) for name, rows in images.items()},
              "diversity_ratio": diversity_ratio(images["refined"]["image"][sample], images["synthetic"]["image"][sample])}
    why = "no estimator fits the task's labels" if not task.learns_labels else "no labelled real test set"
    if task.learns_labels:
        training_sets = {name: (rows["image"], task.targets(rows)) for name, rows in images.items()}
        report.update(metric=task.metric.name, **evaluation.label_free(task, estimators, plain, training_sets, pool01,
                                                                       params.train_estimator, params.seed))
        report["selection_score"] = evaluation.selection_score(report, params.evaluate.label_kept_min,
                                                               task.metric.higher_is_better)
    return {"results": {}, "report": report, "table": evaluation.label_free_table(report, why), "plots": []}


def run(params: Params) -> dict:
    import mlflow
    from refiner import tracking
    task = task_for(params)
    directories = {name: common.estimator_dir(name) for name in common.TRAINING_SETS}
    with tracking.stage_run("evaluate", common.declared_params("evaluate", params)) as mlflow_run:
        inputs = open_inputs(task, params)
        for name, data in inputs.items():
            tracking.log_dataset(data, "input", name)
        used = {name: tracking.log_model_input(directory) for name, directory in directories.items()}
        used["refiner"] = tracking.log_model_input(common.REFINER_DIR)
        estimators = {name: load_estimators(directory) for name, directory in directories.items()}
        plain = {name: load_estimators(directory, "plain") for name, directory in directories.items()}
        out = evaluate(params, inputs, estimators, plain, common.PLOTS / "evaluate")
        report, name = out["report"], out["report"].get("metric")  # None: label-free, no estimator
        common.write_json(common.METRICS / "eval.json", report)
        (common.METRICS / "eval.md").write_text(out["table"] + "\n")
        mlflow.log_metrics({f"{trained_on}_{name}": r[name] for trained_on, r in out["results"].items()})
        if out["results"]:
            mlflow.log_metrics({"refinery_gain": report["refinery_gain"]["gain"],
                                "end_to_end_gain": report["end_to_end_gain"]})
        if report.get("baseline"):
            mlflow.log_metric("baseline_gain", report["baseline"]["gain"])
        for figure in ("realism", "class_realism", "label_kept", "real_confidence", "reverse_score"):
            mlflow.log_metrics({f"{figure}_{trained_on}": value
                                for trained_on, value in (report.get(figure) or {}).items()})
        reported = {trained_on: r[name] for trained_on, r in out["results"].items()}
        if tracking.promote_champion(used, reported, report.get("selection_score"),
                                     evaluation.selection_rule(report)):
            print("evaluate: the estimator trained on refined data is the new champion")
        for path in [*out["plots"], common.METRICS / "eval.md"]:
            mlflow.log_artifact(str(path))
    print(out["table"])
    print("realism (real-vs-fake logistic regression, 0.5 = indistinguishable): "
          + ", ".join(f"{trained_on} {value:.3f}" for trained_on, value in report["realism"].items()))
    if report.get("class_realism"):
        print("class realism (the same, class by class against the pool's balanced pseudo-classes; lowest chooses): "
              + ", ".join(f"{trained_on} {value:.3f}" for trained_on, value in report["class_realism"].items()))
    if "label_kept" not in report:
        return {"table": out["table"], "report": report, "mlflow_run_id": mlflow_run.info.run_id}
    print("label kept (synthetic-trained estimators on refined images, synthetic labels): "
          f"{report['label_kept']['refined']:.3f} (on the synthetic images: {report['label_kept']['synthetic']:.3f})")
    print("reverse validation (real pool labelled by the estimators, scored back on synthetic): "
          + ", ".join(f"{trained_on} {value:.3f}" for trained_on, value in report["reverse_score"].items()))
    return {"table": out["table"], "report": report, "mlflow_run_id": mlflow_run.info.run_id}


def main() -> None:
    common.main(run)


if __name__ == "__main__":
    main()
