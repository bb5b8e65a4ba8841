"""simrefinery's library: everything importable and testable without DVC or Prefect.

    data/        the image-dataset contract: schema, codec, row checks, writer, reader, storage
    simgan/      the refiner: networks, losses, history, trainer, conditioning, the Ray refine job
    estimator/   the downstream model: training recipe, networks, checkpoints
    evaluation/  the report, the figures real labels went into, the label-free ones that choose
    tracking/    MLflow runs, the model registry, lineage
    tasks/       the worlds (digits, gaze, your own images) and the heads that learn their labels
    config.py, params.py   the typed params.yaml;  cli.py   the `simrefinery` command
"""
