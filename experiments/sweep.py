"""Run named params profiles (profiles.yaml) as DVC experiments and tabulate them.

    python -m experiments.sweep                      # every profile -> experiments/results/sweep.{json,md}
    python -m experiments.sweep --profiles quality   # one profile (what `make run PROFILE=quality` does)
    python -m experiments.sweep --profiles a b --set digits.real=mnist   # the same profiles on another real source

Each profile is one `dvc exp run` (so `dvc exp show` lists it too) in this workspace;
params.yaml is restored afterwards. The table holds what `evaluate` measured: accuracy on
the real test split (synthetic / refined / oracle, mean and sd over the estimator seeds), the
label-free realism, label-kept and selection-score figures, the refiner's training time and
the wall time of the whole run, and which profile the label-free rule selects (cells: the
task's metric, mean ± sd over the estimator seeds, and in brackets their ensemble's).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from refiner.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles.yaml"


@dataclass
class Args:
    profiles: list[str] = field(default_factory=list)  # empty: all of profiles.yaml, in its order
    out: Path = ROOT / "experiments" / "results" / "sweep"
    cached: bool = False  # reuse stages whose inputs did not change (faster; wall time then covers only what reran)
    set: list[str] = field(default_factory=list)  # KEY=VALUE overrides applied under every profile


def load_profiles(names: list[str], common: list[str] = ()) -> dict[str, dict]:
    """The named profiles (all when none), each under the ``common`` KEY=VALUE overrides."""
    profiles = yaml.safe_load(PROFILES.read_text())
    unknown = [name for name in names if name not in profiles]
    if unknown:
        raise SystemExit(f"{PROFILES}: no profile {unknown}; there are {list(profiles)}")
    shared = dict(_key_value(item) for item in common)
    chosen = {name: {**shared, **(profiles[name] or {})} for name in (names or profiles)}
    for name, overrides in chosen.items():  # a bad key fails here, before any experiment runs
        try:
            load_params(ROOT / "params.yaml", overrides)
        except ParamsError as err:
            raise SystemExit(f"{PROFILES}: profile {name}: {err}") from None
    return chosen


def _key_value(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep:
        raise SystemExit(f"--set {item}: expected KEY=VALUE, e.g. digits.real=mnist")
    return key, yaml.safe_load(value)


def set_args(overrides: dict) -> list[str]:
    """{"render.num_images": 50000} -> ["-S", "render.num_images=50000"] (YAML values, as DVC parses them)."""
    return [arg for key, value in overrides.items()
            for arg in ("-S", f"{key}={json.dumps(value) if isinstance(value, list) else value}")]


def run_profile(name: str, overrides: dict, cached: bool = False) -> dict:
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
    metrics = json.loads((ROOT / "metrics" / "eval.json").read_text())
    refiner = json.loads((ROOT / "metrics" / "refiner.json").read_text())
    row = {"profile": name, "overrides": overrides, "wall_seconds": seconds, "cached": cached, "metric": metrics["metric"],
           "refiner_train_seconds": refiner_seconds(pipeline), "diversity_ratio": refiner["diversity_ratio"],
           **{key: metrics[key] for key in LABEL_FREE + GAINS}}
    for trained_on in ("synthetic", "refined", "oracle"):
        if trained_on in metrics:
            row[trained_on] = {k: v for k, v in metrics[trained_on].items() if k != "per_class_accuracy"}
    return row


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


LABEL_FREE = ("realism", "class_realism", "label_kept", "real_confidence", "reverse_score", "selection_score")
GAINS = ("refinery_gain", "baseline", "end_to_end_gain")


def select(rows: list[dict]) -> str | None:
    """The label-free rule (refiner/evaluation.py: selection_score): the best-scoring profile
    among rows of one metric (one task)."""
    eligible = [row for row in rows if row.get("selection_score") is not None]
    return max(eligible, key=lambda row: row["selection_score"])["profile"] if eligible else None


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def table(rows: list[dict]) -> str:
    """One table per metric (per task): rows measured with different metrics do not compare."""
    metrics = dict.fromkeys(row["metric"] for row in rows)
    return "\n\n".join(metric_table(metric, [row for row in rows if row["metric"] == metric]) for metric in metrics)


def metric_table(metric: str, rows: list[dict]) -> str:
    def figure(row, key):
        if key not in row:
            return "-"
        r = row[key]
        return f"{r[metric]:.4g} ± {r[metric + '_sd']:.2g} ({r['ensemble_' + metric]:.4g})"
    chosen = select(rows)
    def gain(row):
        g = row["refinery_gain"]
        return f"{g['gain']:+.3f} ± {g['gain_sd']:.3f}"
    lines = [f"| profile | refinery gain (self-training off) | scikit-learn gain | synthetic {metric} (end to end) "
             "| refined | oracle | realism syn / ref | class realism syn / ref | label kept syn / ref "
             "| reverse validation syn / ref | selection score | refiner train | whole run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        mark = " **(selected)**" if row["profile"] == chosen else ""
        reverse = " / ".join(f"{row['reverse_score'][name]:.3f}" for name in ("synthetic", "refined"))
        classes = row.get("class_realism")
        class_realism = f"{classes['synthetic']:.3f} / {classes['refined']:.3f}" if classes else "-"
        score = "lost labels" if row.get("selection_score") is None else f"{row['selection_score']:.3f}"
        lines.append(
            f"| {row['profile']}{mark} | {gain(row)} | {row['baseline']['gain'] if row['baseline'] else float('nan'):+.3f} "
            f"| {figure(row, 'synthetic')} | {figure(row, 'refined')} | {figure(row, 'oracle')} "
            f"| {row['realism']['synthetic']:.3f} / {row['realism']['refined']:.3f} "
            f"| {class_realism} | {row['label_kept']['synthetic']:.3f} / {row['label_kept']['refined']:.3f} "
            f"| {reverse} | {score} "
            f"| {_seconds(row['refiner_train_seconds'])} | {row['wall_seconds'] / 60:.1f} min{' (cached stages)' if row.get('cached') else ''} |")
    return "\n".join(lines)


def main(args: Args) -> list[dict]:
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
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table(rows) + "\n")
    print(table(rows))
    return rows


def parse_args() -> Args:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="*", default=[], help="names in profiles.yaml (default: all)")
    parser.add_argument("--out", type=Path, default=Args.out, help="writes OUT.json and OUT.md")
    parser.add_argument("--cached", action="store_true", help="reuse unchanged stages (wall time: what reran)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="params overrides under every profile (a profile's own keys win)")
    return Args(**vars(parser.parse_args()))


if __name__ == "__main__":
    main(parse_args())
