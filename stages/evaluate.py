"""evaluate: the estimators on the real test split -> the report (JSON), its table (Markdown), plots.

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
from pydantic import Field

from refiner import data
from refiner.estimator.checkpoint import load_model
from refiner.estimator.training import train_seeds
from refiner.evaluation import label_free, scoring
from refiner.evaluation.report import TRAINING_SETS, Report, headline, label_free_table, table
from refiner.params import Params
from refiner.simgan.camera import CameraRefiner
from refiner.simgan.refine_job import scenes_in_process
from refiner.simgan.trainer import diversity_ratio, load_refiner
from refiner.tasks import task_for
from stages import common

# realism this much above the synthetic images' warns: on typeset digits -> MNIST a camera that
# ran away (noise 31 levels) went 0.845 -> 1.000; the refiners that bought a gain raised it by 0.001 at most
REALISM_WORSE = 0.05


class Args(common.StageArgs):
    synthetic: Path = Field(description="the synthetic dataset")
    refined: Path = Field(description="the refined dataset")
    synthetic_estimator: Path = Field(description="the estimators trained on synthetic data (a model directory)")
    refined_estimator: Path = Field(description="the estimators trained on refined data (a model directory)")
    refiner: Path = Field(description="the refiner's model directory (for the lineage and the champion)")
    pool: Path = Field(description="the unlabelled real pool")
    test: Path = Field(description="the labelled real test split")
    pool_labels: Path = Field(description="the real pool's labels (Parquet), for the oracle")
    report: Path = Field(description="the report to write (JSON: refiner.evaluation.report.Report)")
    headline: Path = Field(description="its headline figures (JSON: refiner.evaluation.report.headline), DVC's metrics")
    table: Path = Field(description="the result table to write (Markdown)")
    plots: Path = Field(description="the directory of the head's figures")

    @property
    def training_sets(self) -> dict[str, Path]:
        return {"synthetic": self.synthetic, "refined": self.refined}

    @property
    def estimators(self) -> dict[str, Path]:
        return {"synthetic": self.synthetic_estimator, "refined": self.refined_estimator}


def load_estimators(world, directory: Path, training_set: data.ImageDataset, kind: str = "model") -> list:
    """The models a train_estimator stage wrote, one per seed: ``model`` (end to end) or
    ``plain`` (before adaptation; the same files when the recipe has none); refused when
    they were trained on another dataset than ``training_set``, the one they are scored with."""
    paths = sorted(directory.glob(f"{kind}-seed*.pt")) or sorted(directory.glob("model-seed*.pt"))
    return [load_model(p, world, training_set.digest) for p in paths]


def pool_targets(world, pool_ids: np.ndarray, path: Path) -> np.ndarray | None:
    """The real pool's labels in the pool's order, or None where the source had none."""
    table_ = pq.read_table(path)
    if table_.num_rows == 0:
        return None
    by_id = {row_id: index for index, row_id in enumerate(table_.column("id").to_pylist())}
    order = np.array([by_id[row_id] for row_id in pool_ids])
    labels = {name: data.label_numpy(table_.column(name))[order] for name in world.test_labels.names}
    return world.head.targets(labels)


def open_inputs(world, params: Params, args: Args) -> dict[str, data.ImageDataset]:
    """Every dataset evaluate reads, validated once."""
    test = {"real-test": data.validate(args.test, world.bad_labels)} if world.has_real_test(params) else {}
    return {**test, "real-unlabeled": data.open_unlabeled(args.pool),
            **{name: data.open_training_set(path, world.labels, world.bad_labels)
               for name, path in args.training_sets.items()}}


def label_kept_sets(refiner_dir: Path, training_sets: dict[str, tuple]) -> dict[str, tuple]:
    """What ``label_kept`` scores: the training sets, except that a camera refiner's refined
    images are taken before its camera model. The camera moves no pixel, and its colour,
    vignetting and blur are the shift to the real domain a refiner should make; the
    synthetic-trained estimators read that shift as lost labels (the shapes example: 2.61 px on
    the refined images against 1.47 on the synthetic ones, with every label where it was)."""
    model = load_refiner(refiner_dir / "refiner.pt")
    if not isinstance(model, CameraRefiner):
        return training_sets
    images, targets = training_sets["synthetic"]
    return {**training_sets, "refined": (scenes_in_process(model, images), targets)}


def evaluate(params: Params, world, inputs: dict[str, data.ImageDataset], estimators: dict[str, list],
             plain: dict[str, list], pool_labels: Path, plots_dir: Path, refiner_dir: Path,
             progress: bool = True) -> tuple[Report, list]:
    """The whole report: real-test results per training set (and the oracle), the refinery
    gain (``plain``: the estimators before adaptation) for our estimator and for a
    scikit-learn one, what the adaptation buys on each training set, the label-free figures
    and the selection score; and the head's plots."""
    head = world.head
    pool = inputs["real-unlabeled"].load()
    if head is None or "real-test" not in inputs:
        return label_free_only(params, world, inputs, estimators, plain, pool["image"], refiner_dir), []
    test = inputs["real-test"].load()
    test_targets = head.targets(test)
    results = {name: scoring.score(head, models, test["image"], test_targets) for name, models in estimators.items()}
    oracle_targets = pool_targets(world, pool["id"], pool_labels) if params.evaluate.oracle else None
    if params.evaluate.oracle and oracle_targets is None:
        print(f"evaluate: {pool_labels} is empty (the real pool's source is unlabelled): no oracle")
    if oracle_targets is not None:
        runs = train_seeds(head, pool["image"], oracle_targets, params.train_estimator, params.seed, progress,
                           desc="evaluate: the oracle")
        results["oracle"] = scoring.score(head, [run.model for run in runs], test["image"], test_targets)
    plots = head.plot(results, plots_dir)
    training_sets = {}
    for name in TRAINING_SETS:
        rows = inputs[name].load()
        training_sets[name] = (rows["image"], head.targets(rows))
    report = Report(metric=head.metric.name, higher_is_better=head.metric.higher_is_better, results=results,
                    refinery_gain=scoring.refinery_gain(head, plain, test["image"], test_targets),
                    baseline=scoring.baseline_gain(head, training_sets, test["image"], test_targets),
                    end_to_end_gain=scoring.end_to_end_gain(head, results),
                    adaptation_gain=scoring.adaptation_gain(head, results, plain, test["image"], test_targets),
                    adaptation=params.train_estimator.adaptation,
                    **label_free.label_free(head, estimators, plain, training_sets, pool["image"],
                                            params.train_estimator, params.seed,
                                            label_kept_sets(refiner_dir, training_sets)))
    return chosen(report, params), plots


def chosen(report: Report, params: Params) -> Report:
    """The report with its label-free selection score and the rule that gave it."""
    return report.model_copy(update={"selection_score": label_free.selection_score(report, params.evaluate.label_kept_min),
                                     "selection_rule": label_free.selection_rule(report)})


def label_free_only(params: Params, world, inputs, estimators, plain, pool01, refiner_dir: Path) -> Report:
    """No labelled real test set or no estimator: realism and diversity, plus, with an
    estimator, the label-free figures and the selection score."""
    images = {name: inputs[name].load() for name in TRAINING_SETS}
    sample = np.random.default_rng(params.seed).permutation(len(images["synthetic"]["image"]))[:256]
    diversity = diversity_ratio(images["refined"]["image"][sample], images["synthetic"]["image"][sample])
    if world.head is None:
        realism = label_free.realism_per_set({name: (rows["image"], None) for name, rows in images.items()}, pool01,
                                             params.seed)
        return Report(realism=realism, diversity_ratio=diversity)
    head = world.head
    training_sets = {name: (rows["image"], head.targets(rows)) for name, rows in images.items()}
    report = Report(metric=head.metric.name, higher_is_better=head.metric.higher_is_better, diversity_ratio=diversity,
                    **label_free.label_free(head, estimators, plain, training_sets, pool01, params.train_estimator,
                                            params.seed, label_kept_sets(refiner_dir, training_sets)))
    return chosen(report, params)


def run(params: Params, args: Args) -> dict:
    import mlflow
    from refiner import tracking
    world = task_for(params)
    with tracking.stage_run("evaluate", common.declared_params("evaluate", params)) as mlflow_run:
        inputs = open_inputs(world, params, args)
        for name, dataset in inputs.items():
            tracking.log_dataset(dataset, "input", name)
        used = {name: tracking.log_model_input(directory) for name, directory in args.estimators.items()}
        used["refiner"] = tracking.log_model_input(args.refiner)
        learns = world.head is not None
        estimators = {name: load_estimators(world, d, inputs[name]) if learns else [] for name, d in args.estimators.items()}
        plain = {name: load_estimators(world, d, inputs[name], "plain") if learns else []
                 for name, d in args.estimators.items()}
        report, plots = evaluate(params, world, inputs, estimators, plain, args.pool_labels, args.plots, args.refiner)
        report = report.model_copy(update={"datasets": {name: dataset.digest for name, dataset in inputs.items()}})
        text = table(report, world.head.metric) if report.results else label_free_table(report, why_label_free(world))
        common.write_json(args.report, report.model_dump(mode="json"))
        common.write_json(args.headline, headline(report))
        args.table.write_text(text + "\n")
        log_report(report)
        reported = {trained_on: r.mean for trained_on, r in report.results.items()}
        if tracking.promote_champion(used, reported, report.selection_score, report.selection_rule):
            print("evaluate: the estimator trained on refined data is the new champion")
        for path in [*plots, args.table]:
            mlflow.log_artifact(str(path))
    print(text)
    print_label_free(report)
    return {"table": text, "report": report.model_dump(mode="json"), "mlflow_run_id": mlflow_run.info.run_id}


def why_label_free(world) -> str:
    return "no estimator fits the task's labels" if world.head is None else "no labelled real test set"


def log_report(report: Report) -> None:
    """The report's figures as MLflow metrics, to 4 decimals (the UI shows all 16 otherwise),
    each under one name: the headline's as DVC shows them (``synthetic`` and ``refined``
    before adaptation, ``end_to_end``, ``gain``, ``realism`` of the refined images), the
    rest named apart (``end_to_end_synthetic``, ``realism_synthetic``, ...)."""
    import mlflow
    figures = headline(report)
    figures |= {f"end_to_end_{trained_on}": r.mean for trained_on, r in report.results.items()
                if trained_on not in ("refined", "oracle")}  # those two are the headline's end_to_end, oracle
    if report.results:
        figures["end_to_end_gain"] = report.end_to_end_gain.gain
        figures |= {f"adaptation_gain_{name}": gain.gain for name, gain in (report.adaptation_gain or {}).items()}
    if report.baseline:
        figures["baseline_gain"] = report.baseline.gain
    for figure in ("realism", "class_realism", "label_kept", "real_confidence", "reverse_score"):
        per_set = getattr(report, figure)
        if per_set is not None:
            figures |= {f"{figure}_{trained_on}": value for trained_on, value in per_set.model_dump().items()
                        if (figure, trained_on) != ("realism", "refined")}  # the headline's realism
    mlflow.log_metrics({name: round(value, 4) for name, value in figures.items()})


def print_label_free(report: Report) -> None:
    print(f"realism (real-vs-fake logistic regression, 0.5 = indistinguishable): "
          f"synthetic {report.realism.synthetic:.3f}, refined {report.realism.refined:.3f}")
    if report.realism.refined > report.realism.synthetic + REALISM_WORSE:
        print(f"WARNING evaluate: the refined images are easier to tell from the real pool than the synthetic ones "
              f"(realism {report.realism.synthetic:.3f} -> {report.realism.refined:.3f}): this refiner does not look "
              "like your camera; its loss curves and samples are in plots/refiner/")
    if report.class_realism is not None:
        print("class realism (the same, class by class against the pool's balanced pseudo-classes; lowest chooses): "
              f"synthetic {report.class_realism.synthetic:.3f}, refined {report.class_realism.refined:.3f}")
    if report.label_kept is None:
        return
    print("label kept (synthetic-trained estimators on refined images, before a camera model, synthetic labels): "
          f"{report.label_kept.refined:.3f} (on the synthetic images: {report.label_kept.synthetic:.3f})")
    print("reverse validation (real pool labelled by the estimators, scored back on synthetic): "
          f"synthetic {report.reverse_score.synthetic:.3f}, refined {report.reverse_score.refined:.3f}")


def main(argv: list[str] | None = None) -> None:
    common.main(run, Args, __doc__, argv)


if __name__ == "__main__":
    main()
