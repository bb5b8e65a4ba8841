"""Estimator checkpoints: plain tensors and JSON-able values (they load with
``torch.load(weights_only=True)``), with the world they were trained for and its state (what
the world derived from the user's data, e.g. the images world's label kinds)."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from refiner.errors import CheckpointError


def save_model(model: nn.Module, world, image_shape, seed: int, path: Path, training_digest: str | None = None) -> None:
    """``training_digest``: the digest of the dataset it was trained on (``load_model`` checks it)."""
    torch.save({"state_dict": model.state_dict(), "task": world.name, "task_state": world.state,
                "image_shape": list(image_shape), "seed": seed, "training_digest": training_digest}, path)


def load_model(path: Path, world, training_digest: str | None = None) -> nn.Module:
    """The estimator saved at ``path``, refused in one line when it is unreadable, was
    trained for another world or other labels than ``world``'s, or (``training_digest``
    given) on another dataset than the one of that digest."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text suggests weights_only=False: never for a file we did not write
        raise CheckpointError(f"{path}: not a usable estimator checkpoint (it holds Python objects, not only "
                              "tensors; refusing to load it)") from None
    except Exception as err:
        raise CheckpointError(f"{path}: not a usable estimator checkpoint ({type(err).__name__}: {err})") from None
    trained_for = (checkpoint.get("task"), checkpoint.get("task_state"))
    if trained_for != (world.name, world.state):
        raise CheckpointError(f"{path}: an estimator for task {trained_for[0]} {trained_for[1] or ''}, not for "
                              f"this task ({world.name} {world.state or ''}): retrain it (dvc repro)")
    trained_on = checkpoint.get("training_digest")
    if training_digest is not None and trained_on != training_digest:
        raise CheckpointError(f"{path}: trained on the dataset {str(trained_on)[:12]}, not on {training_digest[:12]} "
                              "that it is scored with: retrain it (dvc repro train_estimator)")
    model = world.head.estimator(tuple(checkpoint["image_shape"]))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: its weights do not fit the task's estimator ({err})") from None
    return model.eval()
