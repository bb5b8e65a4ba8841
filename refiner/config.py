"""The typed sections of params.yaml that every task shares: one pydantic model per section,
every default in one place, unknown keys refused. ``refiner.params`` assembles them (plus
one section per registered task) into the whole params file."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator



class Section(BaseModel):
    """A params.yaml section: a misspelt key is an error, not a silent default."""
    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True)


class RenderParams(Section):
    num_images: int = Field(5000, gt=0, description="synthetic images the task's simulator makes")


class IngestParams(Section):
    test_fraction: float = Field(0.5, gt=0, lt=1, description=(
        "share of the labelled real images kept as the test split (evaluate only); the rest is the "
        "unlabelled pool the refiner learns from"))


class SimGANParams(Section):
    """The paper's SimGAN (refiner/simgan/)."""
    channels: int = Field(32, gt=0, description="refiner width (the paper: 64)")
    num_blocks: int = Field(4, ge=0, description="ResNet blocks of the refiner (the paper: 4)")
    disc_layers: tuple[tuple[int, int], ...] = Field(
        ((64, 1), (64, 1)), min_length=1,
        description="(channels, stride) per 3x3 conv of the discriminator: two stride-1 convs see 5x5 patches")
    lam: float = Field(0.3, alias="lambda", ge=0, description=(
        "self-regularization weight on mean L1 (the paper's lambda); chosen label-free (experiments/README.md). "
        "With the conditional discriminator holding the class it can be low; without one, the paper's 10"))
    psi: Literal["pixels", "blur"] = Field("pixels", description=(
        "space of the self-regularization L1 (the paper's psi): pixels, or a 3x3 box blur of both images, "
        "so a stroke may move by a pixel while the image's mass stays put"))
    semantic_weight: float = Field(0.0, ge=0, description=(
        "weight of the task-consistency term: a frozen estimator trained on the synthetic images must still "
        "predict their labels on the refined ones (CyCADA's semantic loss); 0: off"))
    semantic_steps: int = Field(600, ge=1, description=(
        "training steps of that frozen estimator (also the conditional discriminator's pseudo-labeller)"))
    conditional: bool = Field(True, description=(
        "class-conditional discriminator (projection): synthetic images carry their class, the real pool "
        "the frozen synthetic estimator's pseudo-labels, balanced to the synthetic class shares; so a "
        "refined 9 must look like the pool's 9s, not like any real digit (classification tasks only: "
        "set false, with lambda 10, for a task without classes)"))
    camera: bool = Field(False, description=(
        "learn a camera model after the residual refiner: blur, tone curve, white balance, vignetting, "
        "sensor noise by brightness with its grain and colour, and JPEG as explicit parameters (refiner/simgan/camera.py); "
        "it moves no pixel, so labels hold by construction, and lambda holds the residual refiner only"))
    jpeg: bool = Field(True, description=(
        "the camera model codes JPEG where the real frames are JPEG-coded, each image at one of their own "
        "qualities (read off their DCT coefficients by train_refiner, which prints them); false: never"))
    sensor_weight: float = Field(1.0, ge=0, description=(
        "weight of the sensor-statistics term: the refined images' noise level by brightness, grain and JPEG "
        "blocks must match the real pool's (refiner/simgan/sensor.py; the adversarial loss alone leaves the "
        "noise where it starts); 0: the game alone"))
    residual: bool = Field(True, description="the paper's residual refiner; false (with camera): the camera alone")
    camera_lr: float = Field(0.004, gt=0, description=(
        "the camera's learning rate: its few parameters must travel far (a gain of 0.85 is 0.16 in log); "
        "at 0.01 its gain and offset drift apart on the shapes example"))
    disc_global: int = Field(0, ge=0, description=(
        "width of a second, global discriminator that sees the whole image (colour cast, vignetting), "
        "added to the local one's loss; 0: the paper's local discriminator alone"))
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(128, gt=0)
    pretrain_refiner_steps: int = Field(200, ge=0, description="L1-only steps: the refiner starts as the identity")
    pretrain_disc_steps: int = Field(100, ge=0)
    steps: int = Field(300, ge=1, description="adversarial rounds, each kg refiner + kd discriminator steps")
    kg: int = Field(2, ge=1)
    kd: int = Field(1, ge=1)
    history_size: int = Field(2048, gt=0, description="refined images kept for the discriminator's history half")
    log_every: int = Field(25, gt=0)

    @model_validator(mode="after")
    def _refines_something(self):
        if not (self.residual or self.camera):
            raise ValueError("train_refiner: residual false needs camera true (else nothing refines)")
        return self


class RefineParams(Section):
    batch_size: int = Field(1024, gt=0)
    num_actors: int = Field(2, gt=0, description="on a GPU cluster: one actor per GPU, at most this many")
    actor_num_cpus: float = Field(0.5, gt=0, description=(
        "CPU-only clusters: fractional, two 1-CPU actors on 2 cores starve the rest of the job"))
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16 pays on GPUs; on CPU it is slower")
    ray_address: str | None = Field(None, description='null: local Ray (or RAY_ADDRESS); "ray://host:10001"')


Adaptation = Literal["none", "self_training", "mean_teacher"]


class EstimatorParams(Section):
    """One recipe for the task's estimator, trained on synthetic, refined or (oracle only) real data."""
    num_seeds: int = Field(3, ge=1, description="models per training set; evaluate reports mean and sd over them")
    steps: int = Field(600, ge=1, description="optimizer steps (not epochs: the oracle's small set gets the same budget)")
    eval_every: int = Field(100, ge=1, description="held-out metric every this many steps")
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    max_shift: int = Field(1, ge=0, description="random translation augmentation, pixels")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="held out of the *training* data (never real labels)")
    adaptation: Adaptation = Field("mean_teacher", description=(
        "label-free learning of the unlabelled real pool on top of the labelled set: none, self_training "
        "(thresholded pseudo-labels, retrained from scratch) or mean_teacher (self-ensembling, French et al. 2018; "
        "the only one for tasks without classes). Never a real label"))
    self_training_rounds: int = Field(2, ge=1, description="self_training: rounds of pseudo-labelling and retraining")
    pseudo_label_threshold: float = Field(0.9, ge=0, description=(
        "only real images the model (mean_teacher: the teacher) is this sure of are learnt from"))
    pseudo_label_repeat: int = Field(5, ge=1, description="self_training: each pseudo-labelled real image counts this many times")
    teacher_steps: int = Field(2000, ge=1, description="mean_teacher: steps after the labelled training, from its model")
    teacher_ema: float = Field(0.99, ge=0, lt=1, description="mean_teacher: the teacher's weights' moving-average decay")
    consistency_weight: float = Field(1.0, ge=0, description=(
        "mean_teacher: weight of the student's agreement with the teacher on a second augmented view"))
    class_balanced: bool = Field(True, description=(
        "mean_teacher with classes: the teacher's pool predictions balanced to the labelled set's class shares"))


class EvaluateParams(Section):
    oracle: bool = Field(True, description="also train on the real pool's labels, as a reference only")
    label_kept_min: float = Field(0.97, gt=0, le=1, description=(
        "label-free selection for tasks without classes (rule 2): refined images must keep this share of the "
        "synthetic images' score (classification chooses by class realism, with no gate)"))
