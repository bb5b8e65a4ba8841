"""refine: data/synthetic + models/refiner -> data/refined (same ids, same labels)."""

from __future__ import annotations

from refiner import dataset
from refiner.params import Params
from refiner.refine_job import refine_dataset
from refiner.tasks import task_for
from stages import common


def run(params: Params) -> dict:
    from refiner import tracking
    section, task = params.refine, task_for(params)
    source, out = section.source or common.SYNTHETIC, section.output or common.REFINED
    synthetic = dataset.open_training_set(source, task.labels, task.bad_labels)  # before Ray starts
    checkpoint_digest = dataset.file_sha256(common.REFINER_CHECKPOINT)
    with tracking.stage_run("refine", common.declared_params("refine", params)) as mlflow_run:
        tracking.log_dataset(synthetic, "input", "synthetic")
        tracking.log_model_input(common.REFINER_DIR)
        refined = refine_dataset(
            synthetic, common.REFINER_CHECKPOINT, out, batch_size=section.batch_size,
            num_actors=section.num_actors, actor_num_cpus=section.actor_num_cpus,
            precision=section.precision, ray_address=section.ray_address, image_encoding=params.image_encoding,
            params={"refiner_sha256": checkpoint_digest},
            upstream={"synthetic": synthetic.digest, "refiner": checkpoint_digest})
        tracking.log_dataset(refined, "output", "refined")
    print(f"refine: {refined.num_rows} images -> {out} (digest {refined.digest[:12]})")
    return {"refined": refined.digest, "mlflow_run_id": mlflow_run.info.run_id}


def main() -> None:
    common.main(run)


if __name__ == "__main__":
    main()
