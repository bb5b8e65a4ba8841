"""Figures people would rather see than read: sample grids, confusion matrices, error histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def image_grid(path: Path, rows: dict[str, np.ndarray], columns: int = 16, title: str = "",
               captions: dict[str, list[str]] | None = None) -> Path:
    """One row of images per name (e.g. synthetic | refined | real), values in [0, 1],
    grayscale (H x W) or RGB (H x W x 3); ``captions``: a row's text under each image (its class)."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), columns, figsize=(columns * 0.6, len(rows) * (0.9 if captions else 0.75)),
                             squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(columns):
            axis = axes[r, c]
            axis.axis("off")
            if c < len(images):
                axis.imshow(images[c], cmap="gray" if images[c].ndim == 2 else None, vmin=0, vmax=1,
                            interpolation="nearest")
                if captions and name in captions:
                    axis.text(0.5, -0.08, captions[name][c], transform=axis.transAxes, ha="center", va="top",
                              fontsize=6)
        axes[r, 0].set_title(name, loc="left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def confusion_matrix(matrix: np.ndarray, title: str, path: Path) -> Path:
    """Counts per (true, predicted) class, as given (the caller's title says what they sum over)."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(4.2, 4))
    axis.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        axis.text(col, row, str(value), ha="center", va="center", fontsize=7,
                  color="white" if value > matrix.max() / 2 else "black")
    classes = range(len(matrix))
    axis.set(xlabel="predicted", ylabel="true", title=title, xticks=classes, yticks=classes)
    return _save(fig, path)


def error_histograms(errors: dict[str, list[float]], means: dict[str, float], xlabel: str, path: Path) -> Path:
    """One step histogram of per-sample errors per training set, the mean in the legend."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(0, max(float(np.percentile(e, 99)) for e in errors.values()), 40)
    for name, values in errors.items():
        axis.hist(values, bins=bins, histtype="step", linewidth=1.5, label=f"{name}: {means[name]:.2f}")
    axis.set(xlabel=xlabel, ylabel="images")
    axis.legend()
    return _save(fig, path)
