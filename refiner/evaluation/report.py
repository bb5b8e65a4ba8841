"""The evaluation report, ``metrics/eval.json``, as one typed model: written by ``evaluate``
and read through it by the table, the sweep and the rule check. Figures a real label went
into (``results``, the gains) are kept apart from the label-free ones that choose."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

TRAINING_SETS = ("synthetic", "refined")  # what an estimator is trained on; "oracle" (real labels) is a reference


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Score(_Model):
    """One training set's estimators (one per seed) on the real labelled test split."""
    mean: float
    sd: float
    per_seed: list[float]
    ensemble: float                              # the seeds' mean prediction, scored
    per_class: dict[str, float] | None = None    # classification: accuracy per class
    confusion: list[list[int]] | None = Field(None, exclude=True)  # for the plots only (pooled over seeds)
    errors: list[float] | None = Field(None, exclude=True)         # for the plots only: per-sample errors


class Gain(_Model):
    """Refined minus synthetic (positive: refinement helped, whichever way the metric runs),
    paired by seed."""
    gain: float
    gain_sd: float | None = None
    gain_per_seed: list[float] = []


class RefineryGain(Gain):
    """What the refiner alone buys: the estimators before adaptation."""
    synthetic: float
    synthetic_sd: float
    refined: float
    refined_sd: float


class BaselineGain(_Model):
    """A scikit-learn model trained on each Parquet dataset: a model that is not ours."""
    model: str
    synthetic: float
    refined: float
    gain: float


class PerSet(_Model):
    """A label-free figure of each training set."""
    synthetic: float
    refined: float


class Report(_Model):
    metric: str | None = None                    # the head's metric; None: no estimator fits the labels
    higher_is_better: bool | None = None
    results: dict[str, Score] = {}               # synthetic, refined (end to end) and the oracle, on real test
    refinery_gain: RefineryGain | None = None
    end_to_end_gain: Gain | None = None
    adaptation_gain: dict[str, Gain] | None = None  # per training set: adapted minus before, paired by seed
    adaptation: str | None = None                   # the recipe's (train_estimator.adaptation)
    baseline: BaselineGain | None = None
    # label-free: no real label in any of these (what chooses params, checkpoints, champions)
    realism: PerSet
    class_realism: PerSet | None = None
    label_kept: PerSet | None = None
    real_confidence: PerSet | None = None
    reverse_score: PerSet | None = None
    diversity_ratio: float | None = None
    selection_score: float | None = None
    selection_rule: str | None = None
    # each dataset it read by its contract digest (the name the logs and MLflow give it; DVC's
    # hashes in dvc.lock are of the files)
    datasets: dict[str, str] = {}

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """Reports written before this model (lab results in experiments/results/): the
        metric's name in every key of a training set's figures, the end-to-end gain a number."""
        legacy = isinstance(data, dict) and (any(name in data for name in (*TRAINING_SETS, "oracle"))
                                             or isinstance(data.get("end_to_end_gain"), (int, float)))
        if not legacy:
            return data
        metric = data.get("metric")
        results = {name: {"mean": data[name][metric], "sd": data[name][f"{metric}_sd"],
                          "per_seed": data[name][f"{metric}_per_seed"], "ensemble": data[name][f"ensemble_{metric}"],
                          "per_class": data[name].get("per_class_accuracy")}
                   for name in (*TRAINING_SETS, "oracle") if isinstance(data.get(name), dict)}
        end_to_end = data.get("end_to_end_gain")
        fields = set(cls.model_fields) - {"results", "end_to_end_gain", "higher_is_better"}
        return {**{key: data[key] for key in fields if key in data}, "results": results,
                "end_to_end_gain": {"gain": end_to_end} if end_to_end is not None else None,
                "higher_is_better": metric == "accuracy" if metric else None}


def table(report: Report, metric) -> str:
    """The markdown result table: the refiner alone (no adaptation), end to end (+ the
    adaptation) and what the adaptation buys, and a scikit-learn model, each trained on
    synthetic and on refined data; the paired gains; the oracle. ``metric``: the head's (its
    title and cell format)."""
    cell, gain, end_to_end, baseline = metric.cell.format, report.refinery_gain, report.end_to_end_gain, report.baseline
    adapting = report.adaptation not in (None, "none")
    adapted = report.adaptation_gain if adapting and report.adaptation_gain else {}
    recipe = report.adaptation.replace("_", "-") if adapting else "adaptation"
    end_to_end_title = f"estimator + {recipe} (end to end)" if adapting else "end to end (adaptation off)"
    seeds = len(report.results["synthetic"].per_seed)
    baseline_title = f"scikit-learn {baseline.model}" if baseline else "scikit-learn"
    lines = [f"{metric.title}, mean ± sd over {seeds} seeds:", "",
             f"| trained on | estimator, no adaptation | {end_to_end_title} | {recipe} gain (paired) | {baseline_title} |",
             "|---|---|---|---|---|"]
    for trained_on in TRAINING_SETS:
        r = report.results[trained_on]
        plain, plain_sd = getattr(gain, trained_on), getattr(gain, f"{trained_on}_sd")
        adapted_gain = adapted.get(trained_on)
        lines.append(f"| {trained_on} | {cell(plain)} ± {cell(plain_sd)} | {cell(r.mean)} ± {cell(r.sd)} "
                     f"| {_signed(cell, adapted_gain.gain) + ' ± ' + cell(adapted_gain.gain_sd) if adapted_gain else '-'} "
                     f"| {cell(getattr(baseline, trained_on)) if baseline else '-'} |")
    lines.append(f"| **refinery gain** (refined − synthetic, paired by seed) | **{_signed(cell, gain.gain)} ± "
                 f"{cell(gain.gain_sd)}** | {_signed(cell, end_to_end.gain)} ± {cell(end_to_end.gain_sd)} | "
                 f"| {_signed(cell, baseline.gain) if baseline else '-'} |")
    if "oracle" in report.results:
        r = report.results["oracle"]
        lines.append(f"| oracle: real labels (reference only) | | {cell(r.mean)} ± {cell(r.sd)} | | |")
    return "\n".join(lines)


def label_free_table(report: Report, why: str) -> str:
    """The result table when nothing can be scored on real labels: says why, and what is measured."""
    lines = [f"{why}: label-free figures only (no real label read).", "",
             "| figure | synthetic | refined |", "|---|---|---|",
             "| realism (real-vs-fake logistic regression, 0.5 = indistinguishable) | "
             f"{report.realism.synthetic:.3f} | {report.realism.refined:.3f} |"]
    if report.label_kept is not None:
        lines.append(f"| label kept (synthetic-trained estimators, {report.metric}) | "
                     f"{report.label_kept.synthetic:.3f} | {report.label_kept.refined:.3f} |")
    lines.append(f"| diversity (refined spread / synthetic spread) | 1 | {report.diversity_ratio:.3f} |")
    return "\n".join(lines)


def _signed(cell, value: float) -> str:
    return ("+" if value >= 0 else "−") + cell(abs(value))


def headline(report: Report) -> dict[str, float]:
    """A few figures, rounded, for ``dvc metrics show`` and ``dvc exp show`` at 120 columns
    (``metrics/headline.json``; everything else: ``metrics/eval.json``). For a class task:
    accuracies of the estimators before adaptation on synthetic and refined data, the
    refinery gain and its sd over seeds, end to end (refined, adapted) and the oracle;
    and the refined images' realism (label-free, 0.5 = indistinguishable)."""
    gain, results = report.refinery_gain, report.results
    figures = {"synthetic": gain and gain.synthetic, "refined": gain and gain.refined, "gain": gain and gain.gain,
               "gain_sd": gain and gain.gain_sd, "end_to_end": results["refined"].mean if "refined" in results else None,
               "oracle": results["oracle"].mean if "oracle" in results else None, "realism": report.realism.refined}
    return {name: round(value, 4) for name, value in figures.items() if value is not None}
