"""The task registry: every module or package here that defines ``TASK`` is a task.

    from refiner.tasks import task_for
    task = task_for(params)

A new task is one module here (``TASK = MyTask()``, a subclass of ``base.ClassificationTask``
or ``base.RegressionTask``) and, if it has settings, one params.yaml section named after it.
Nothing else in the project names a task.
"""

from __future__ import annotations

import importlib
import pkgutil

from refiner.tasks.base import Task


def _discover() -> dict[str, Task]:
    tasks = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        task = getattr(importlib.import_module(f"{__name__}.{info.name}"), "TASK", None)
        if task is not None:
            tasks[task.name] = task
    return tasks


TASKS: dict[str, Task] = _discover()


def task_for(params) -> Task:
    """The task params.yaml names, configured by its section (a task whose labels come from
    the user's data reads their kinds here)."""
    return TASKS[params.task].configured(params)
