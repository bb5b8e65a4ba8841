"""Score label-free selection rules against a sweep's refinery gains (after the fact, for the lab notes).

    python -m experiments.rule_check experiments/results/rule4-vs-2-optdigits-seed2.json ...

For each sweep (`experiments.sweep`'s JSON): which profile rule 2 (label-kept gate, then
reverse validation on synthetic) and rule 4 (lowest class-conditional realism) pick, their
CNN refinery gains (self-training off) and sd of the paired per-seed difference, the best
profile's, and each score's Spearman correlation with the gains. The figures of each rule
are the label-free ones `evaluate` wrote; the gains are what the rules are judged by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import tyro
from scipy.stats import spearmanr

from experiments.sweep import Row, read_rows
from refiner.evaluation.label_free import selection_score
from refiner.params import load_params

LABEL_KEPT_MIN = load_params().evaluate.label_kept_min


def rule2_score(row: Row) -> float | None:
    """The label-kept gate, then reverse validation: ``selection_score`` without classes."""
    return selection_score(row.report.model_copy(update={"class_realism": None}), LABEL_KEPT_MIN)


def rule4_score(row: Row) -> float:
    """Class realism: ``selection_score`` of a classification run."""
    return selection_score(row.report, LABEL_KEPT_MIN)


def pick(rows: list[Row], score) -> Row:
    eligible = [row for row in rows if score(row) is not None]
    return max(eligible, key=score)


def check(rows: list[Row]) -> dict:
    gains = [row.report.refinery_gain.gain for row in rows]
    best = max(rows, key=lambda row: row.report.refinery_gain.gain)
    out = {"best": (best.profile, best.report.refinery_gain.gain)}
    for name, score in (("rule 2", rule2_score), ("rule 4", rule4_score)):
        chosen = pick(rows, score)
        scores = [score(row) if score(row) is not None else float("-inf") for row in rows]
        out[name] = {"pick": chosen.profile, "gain": chosen.report.refinery_gain.gain,
                     "gain_sd": chosen.report.refinery_gain.gain_sd,
                     "spearman": float(spearmanr(scores, gains).statistic)}
    return out


def main(paths: Annotated[list[Path], tyro.conf.Positional]) -> None:
    """Which profile each rule picks in each sweep's JSON, with its gain and Spearman."""
    for path in paths:
        result = check(read_rows(path))
        print(f"{path}: best {result['best'][0]} {100 * result['best'][1]:+.1f}")
        for name in ("rule 2", "rule 4"):
            r = result[name]
            print(f"  {name}: picks {r['pick']} {100 * r['gain']:+.1f} ± {100 * r['gain_sd']:.1f} points; "
                  f"Spearman {r['spearman']:+.2f}")
        margin = 100 * (result["rule 4"]["gain"] - result["rule 2"]["gain"])
        print(f"  rule 4 - rule 2: {margin:+.1f} points; rule 4's gain / its sd: "
              f"{result['rule 4']['gain'] / max(result['rule 4']['gain_sd'], 1e-12):.1f}")


if __name__ == "__main__":
    tyro.cli(main, description=__doc__)
