"""Run named params profiles (profiles.yaml) as DVC experiments and tabulate them.

    python -m experiments.sweep                      # every profile -> experiments/results/sweep.{json,md}
    python -m experiments.sweep --profiles quality   # one profile (what `make run PROFILE=quality` does)
    python -m experiments.sweep --profiles a b --set digits.real=mnist   # the same profiles on another real source

Each profile is one `dvc exp run` (so `dvc exp show` lists it too) in this workspace;
params.yaml is restored afterwards. The table holds what `evaluate` measured (its report,
refiner.evaluation.report.Report): the task's metric on the real test split (synthetic /
refined / oracle, mean ± sd over the estimator seeds, in brackets their ensemble's), the
label-free realism, label-kept and selection-score figures, the refiner's training time
and the wall time of the whole run, and which profile the label-free rule selects.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, model_validator

from refiner.errors import Refused
from refiner.evaluation.report import Report
from refiner.params import load_params, parse_overrides
from refiner.tasks import task_for

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles.yaml"


class Args(BaseModel):
    """Run params profiles as DVC experiments; write OUT.json and OUT.md."""
    profiles: list[str] = Field(default_factory=list, description="names in profiles.yaml (default: all, in its order)")
    out: Path = Field(ROOT / "experiments" / "results" / "sweep", description="writes OUT.json and OUT.md")
    cached: bool = Field(False, description=(
        "reuse stages whose inputs did not change (faster; wall time then covers only what reran)"))
    set: list[str] = Field(default_factory=list, description=(
        "KEY=VALUE params overrides under every profile (a profile's own keys win)"))


class Row(BaseModel):
    """One profile's row: its overrides, times, and the evaluation report of its run."""
    profile: str
    overrides: dict[str, Any]
    wall_seconds: float
    cached: bool = False
    refiner_train_seconds: float | None = None
    diversity_ratio: float | None = None
    report: Report

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """Rows written before the report had a model held its figures beside the row's own keys."""
        if isinstance(data, dict) and "report" not in data:
            own = {key: data[key] for key in cls.model_fields if key in data}
            return {**own, "report": data}
        return data


def load_profiles(names: list[str], common: list[str] = ()) -> dict[str, dict]:
    """The named profiles (all when none), each under the ``common`` KEY=VALUE overrides."""
    profiles = yaml.safe_load(PROFILES.read_text())
    unknown = [name for name in names if name not in profiles]
    if unknown:
        raise SystemExit(f"{PROFILES}: no profile {unknown}; there are {list(profiles)}")
    try:
        shared = parse_overrides(list(common))
    except Refused as err:
        raise SystemExit(f"--set: {err}") from None
    chosen = {name: {**shared, **(profiles[name] or {})} for name in (names or profiles)}
    for name, overrides in chosen.items():  # a bad key fails here, before any experiment runs
        try:
            task_for(load_params(ROOT / "params.yaml", overrides))
        except Refused as err:
            raise SystemExit(f"{PROFILES}: profile {name}: {err}") from None
    return chosen


def set_args(overrides: dict) -> list[str]:
    """{"render.num_images": 50000} -> ["-S", "render.num_images=50000"] (YAML values, as DVC parses them)."""
    return [arg for key, value in overrides.items()
            for arg in ("-S", f"{key}={json.dumps(value) if isinstance(value, list) else value}")]


def run_profile(name: str, overrides: dict, cached: bool = False) -> Row:
    """One `dvc exp run`; returns the row of the table."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    pipeline = f"sweep-{name}-{stamp}"
    env = {**os.environ, "SIMREFINERY_PIPELINE_ID": pipeline}
    started = time.perf_counter()
    # --force: every stage runs, so the wall time is the whole pipeline's, whatever ran before
    force = [] if cached else ["--force"]
    subprocess.run(["dvc", "exp", "run", *force, "--name", f"{name}-{stamp}", *set_args(overrides)],
                   cwd=ROOT, env=env, check=True)
    seconds = time.perf_counter() - started
    report = Report.model_validate_json((ROOT / "metrics" / "eval.json").read_text())
    refiner = json.loads((ROOT / "metrics" / "refiner.json").read_text())
    return Row(profile=name, overrides=overrides, wall_seconds=seconds, cached=cached,
               refiner_train_seconds=refiner_seconds(pipeline), diversity_ratio=refiner["diversity_ratio"],
               report=report)


def refiner_seconds(pipeline: str) -> float | None:
    """The refiner's training time as its MLflow run recorded it (DVC's outputs hold no
    wall-clock time, so a retrain with the same weights changes none of them); None when
    the stage did not run in this pipeline invocation (cached)."""
    import mlflow
    from refiner import tracking
    experiment = tracking.setup(ROOT)
    parents = mlflow.search_runs([experiment], output_format="list", filter_string=(
        f"tags.`simrefinery.pipeline` = '{pipeline}' and tags.`simrefinery.role` = 'pipeline'"))
    if not parents:
        return None
    runs = mlflow.search_runs([experiment], output_format="list", filter_string=(
        f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}' and tags.`simrefinery.stage` = 'train_refiner'"))
    return runs[0].data.metrics.get("seconds") if runs else None


def select(rows: list[Row]) -> str | None:
    """The label-free rule (refiner/evaluation/label_free.py: selection_score): the
    best-scoring profile among rows of one metric (one task)."""
    eligible = [row for row in rows if row.report.selection_score is not None]
    return max(eligible, key=lambda row: row.report.selection_score).profile if eligible else None


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def table(rows: list[Row]) -> str:
    """One table per metric (per task): rows measured with different metrics do not compare."""
    metrics = dict.fromkeys(row.report.metric for row in rows)
    return "\n\n".join(metric_table(metric, [row for row in rows if row.report.metric == metric]) for metric in metrics)


def _pair(per_set) -> str:
    return f"{per_set.synthetic:.3f} / {per_set.refined:.3f}" if per_set is not None else "-"


def metric_table(metric: str, rows: list[Row]) -> str:
    def figure(row: Row, trained_on: str) -> str:
        score = row.report.results.get(trained_on)
        return "-" if score is None else f"{score.mean:.4g} ± {score.sd:.2g} ({score.ensemble:.4g})"
    chosen = select(rows)
    lines = [f"| profile | refinery gain (no adaptation) | scikit-learn gain | synthetic {metric} (end to end) "
             "| refined | oracle | realism syn / ref | class realism syn / ref | label kept syn / ref "
             "| reverse validation syn / ref | selection score | refiner train | whole run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        report = row.report
        mark = " **(selected)**" if row.profile == chosen else ""
        gain = f"{report.refinery_gain.gain:+.3f} ± {report.refinery_gain.gain_sd:.3f}"
        baseline = report.baseline.gain if report.baseline else float("nan")
        score = "lost labels" if report.selection_score is None else f"{report.selection_score:.3f}"
        lines.append(
            f"| {row.profile}{mark} | {gain} | {baseline:+.3f} "
            f"| {figure(row, 'synthetic')} | {figure(row, 'refined')} | {figure(row, 'oracle')} "
            f"| {_pair(report.realism)} | {_pair(report.class_realism)} | {_pair(report.label_kept)} "
            f"| {_pair(report.reverse_score)} | {score} "
            f"| {_seconds(row.refiner_train_seconds)} | {row.wall_seconds / 60:.1f} min{' (cached stages)' if row.cached else ''} |")
    return "\n".join(lines)


def read_rows(path: Path) -> list[Row]:
    """A sweep's JSON (experiments/results/), any of its formats."""
    return [Row.model_validate(row) for row in json.loads(Path(path).read_text())]


def main(args: Args) -> list[Row]:
    profiles = load_profiles(args.profiles, args.set)
    params = ROOT / "params.yaml"
    original = params.read_text()
    rows = []
    try:
        for name, overrides in profiles.items():
            print(f"sweep: profile {name} {overrides}", flush=True)
            rows.append(run_profile(name, overrides, args.cached))
            params.write_text(original)  # the next profile starts from the committed params
    finally:
        params.write_text(original)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps([row.model_dump(mode="json") for row in rows], indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table(rows) + "\n")
    print(table(rows))
    return rows


if __name__ == "__main__":
    import tyro
    main(tyro.cli(Args, description=__doc__))
