"""refine: the synthetic dataset + the refiner -> the refined dataset (same ids, same labels),
as a Ray Data job: local, or on a cluster (`ray job submit`), reading and writing local
directories or s3:// prefixes."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field

from refiner import data
from refiner.params import Params
from refiner.simgan.refine_job import refine_dataset
from refiner.tasks import task_for
from stages import common


class Args(common.StageArgs):
    source: str = Field(description="the synthetic dataset to refine: a directory or an s3://bucket/prefix "
                                    "(a cluster's workers read it themselves: no shared filesystem)")
    refiner: Path = Field(description="the refiner's model directory (holding refiner.pt)")
    out: str = Field(description="where the refined dataset goes: a directory or an s3://bucket/prefix")


def run(params: Params, args: Args) -> dict:
    import mlflow
    from refiner import tracking
    section, world = params.refine, task_for(params)
    checkpoint = args.refiner / "refiner.pt"
    synthetic = data.open_training_set(args.source, world.labels, world.bad_labels)  # before Ray starts
    checkpoint_digest = data.file_sha256(checkpoint)
    with tracking.stage_run("refine", common.declared_params("refine", params)) as mlflow_run:
        tracking.log_dataset(synthetic, "input", "synthetic")
        tracking.log_model_input(args.refiner)
        started = time.perf_counter()
        refined = refine_dataset(
            synthetic, checkpoint, args.out, producer="stages.refine", batch_size=section.batch_size,
            num_actors=section.num_actors, actor_num_cpus=section.actor_num_cpus,
            precision=section.precision, ray_address=section.ray_address, image_encoding=params.image_encoding,
            params={"refiner_sha256": checkpoint_digest},
            upstream={"synthetic": synthetic.digest, "refiner": checkpoint_digest})
        seconds = time.perf_counter() - started  # Ray's start and, on a resumed job, only the parts left
        tracking.log_dataset(refined, "output", "refined")
        mlflow.log_metrics({"rows": refined.num_rows, "seconds": round(seconds, 2),
                            "images_per_s": round(refined.num_rows / seconds, 1)})
    print(f"refine: {refined.num_rows} images -> {args.out} in {seconds:.1f} s (digest {refined.digest[:12]})")
    return {"refined": refined.digest, "mlflow_run_id": mlflow_run.info.run_id}


def main(argv: list[str] | None = None) -> None:
    common.main(run, Args, __doc__, argv)


if __name__ == "__main__":
    main()
