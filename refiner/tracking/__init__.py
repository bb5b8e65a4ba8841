"""Tracking: one MLflow run per stage execution with the lineage of every dataset and model
(``runs``), the model registry and its champion (``registry``), and the walk back from any
artifact to its params and code version (``lineage``). Import from ``refiner.tracking``."""

from refiner.tracking.registry import ESTIMATOR_MODEL, REFINER_MODEL, promote_champion
from refiner.tracking.runs import (OUTPUT_TAG, PIPELINE_ID_ENV, command_run, end_dead_runs, log_dataset, log_model, log_model_input,
                                   model_record, setup, stage_run)

__all__ = ["ESTIMATOR_MODEL", "REFINER_MODEL", "promote_champion", "OUTPUT_TAG", "PIPELINE_ID_ENV", "command_run", "end_dead_runs",
           "log_dataset", "log_model", "log_model_input", "model_record", "setup", "stage_run"]
