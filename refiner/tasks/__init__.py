"""The worlds: every module or package here that defines ``WORLD`` (a ``World`` subclass).

    from refiner.tasks import task_for
    world = task_for(params)          # once per process: the world params.yaml names
    world.synthesize(params); world.head.loss(outputs, targets)

A new world is one module here (``WORLD = MyWorld``, a ``refiner.tasks.world.World`` that
names its head from ``refiner.tasks.heads``) and, if it has settings, one params.yaml
section named after it. Nothing else in the project names a world.
"""

from __future__ import annotations

import importlib
import pkgutil

from refiner.errors import ParamsError
from refiner.tasks.world import World


def _discover() -> dict[str, type[World]]:
    worlds = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        world = getattr(importlib.import_module(f"{__name__}.{info.name}"), "WORLD", None)
        if world is not None:
            worlds[world.name] = world
    return worlds


WORLDS: dict[str, type[World]] = _discover()


def task_for(params) -> World:
    """The world params.yaml's ``task`` names, built from its section (a world whose labels
    come from the user's data reads their kinds here), with the recipe checked against its
    head: self-training and the conditional discriminator need classes."""
    world = WORLDS[params.task](params)
    has_classes = world.head is not None and world.head.has_classes
    learns = f"{world.head.columns}" if world.head is not None else "no labels"
    if params.train_estimator.adaptation == "self_training" and world.head is not None and not has_classes:
        raise ParamsError(f"train_estimator.adaptation: task {world.name} has no classes to pseudo-label with (it "
                          f"regresses {learns}): set it to mean_teacher or none")
    if params.train_refiner.conditional and not has_classes:
        raise ParamsError(f"train_refiner.conditional: task {world.name} has no classes ({learns}) to condition "
                          "the discriminator on: set it to false (and lambda to 10, the paper's)")
    return world
