"""The SimGAN training schedule (Shrivastava et al. 2017, Algorithm 1).

1. pretrain the refiner on self-regularization only (it starts as the identity),
2. pretrain the discriminator on real vs. (identity-)refined images,
3. alternate: Kg refiner steps (adversarial + lambda * L1), then Kd discriminator steps
   whose fake half comes from the history buffer.

Everything is seeded from the params section and one seed; on CPU the same params, seed
and data give the same weights.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from refiner.progress import bar as progress_bar
from refiner.config import SimGANParams
from refiner.data import channels
from refiner.errors import CheckpointError
from refiner.simgan.history import HistoryBuffer
from refiner.simgan.losses import discriminator_loss, refiner_loss, self_regularization_loss
from refiner.simgan import sensor
from refiner.simgan.camera import SENSOR_LR, Camera, CameraRefiner
from refiner.simgan.networks import Discriminator, GlobalDiscriminator, Refiner
from refiner.tensors import channels_first, channels_last


def to_model(images01: np.ndarray) -> torch.Tensor:
    """N x H x W (x C) floats in [0, 1] -> N x C x H x W in [-1, 1] (the networks' range)."""
    return channels_first(images01) * 2 - 1


def from_model(batch: torch.Tensor) -> np.ndarray:
    return ((channels_last(batch) + 1) / 2).clip(0, 1)


class Uint8Refiner(torch.nn.Module):
    """The registered model, for users who load it on its own: uint8 images in, as the datasets
    hold them (N x H x W, or N x H x W x C), uint8 refined images out in the same layout; the
    [-1, 1] range the networks take stays inside (as the refine job converts)."""

    def __init__(self, refiner: torch.nn.Module):
        super().__init__()
        self.refiner = refiner

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        gray = images.dim() == 3
        x = images.float() / 255
        x = (x[:, None] if gray else x.permute(0, 3, 1, 2)) * 2 - 1
        y = ((self.refiner(x) + 1) / 2).clamp(0, 1)
        y = torch.round(y * 255).to(torch.uint8)
        return y[:, 0] if gray else y.permute(0, 2, 3, 1).contiguous()


COLLAPSE_RATIO = 0.5  # refined outputs with under half their inputs' spread: flagged as mode collapse


def diversity_ratio(refined01: np.ndarray, synthetic01: np.ndarray) -> float:
    """Mean pairwise L1 distance among refined images over the same among their synthetic
    inputs: about 1 keeps the inputs' variety, near 0 is mode collapse (every output alike,
    as a lambda=0.1 prototype that turned every digit into a '4')."""
    from scipy.spatial.distance import cdist

    def spread(images):  # cdist: no n x n x pixels array (3 GB for 256 64x64 RGB images)
        flat = images.reshape(len(images), -1).astype(np.float64)
        return cdist(flat, flat, "cityblock").mean() / flat.shape[1]
    return float(spread(refined01) / max(spread(synthetic01), 1e-12))


CHANCE_ACCURACY = 0.6  # a local discriminator never above this on real and refined patches: at chance


def discriminator_at_chance(log: list[dict]) -> bool:
    """True when the local discriminator never told real from refined patches over the whole
    adversarial run (its best mean accuracy under ``CHANCE_ACCURACY``): it gave the refiner no
    signal, typically a patch too small for the image (refiner.simgan.sizing). A discriminator
    that falls to chance late, once the refiner fools it, is the game won, not this."""
    accuracies = [(e["d_acc_real"] + e["d_acc_refined"]) / 2 for e in log if e["phase"] == "adversarial"]
    return bool(accuracies) and max(accuracies) < CHANCE_ACCURACY


def build_refiner(config: SimGANParams, in_channels: int = 1, jpeg_qualities=None) -> Refiner | CameraRefiner:
    """``jpeg_qualities``: the camera model's JPEG stage's (``Camera``), None: none."""
    residual = Refiner(in_channels, config.channels, config.num_blocks) if config.residual else None
    return CameraRefiner(residual, Camera(in_channels, jpeg_qualities)) if config.camera else residual


def read_jpeg(config: SimGANParams, real01: np.ndarray):
    """The real pool's JPEG qualities where the camera model codes JPEG (``sensor.frame_qualities``),
    else None."""
    return sensor.frame_qualities(np.asarray(real01)) if config.camera and config.jpeg else None


@contextmanager
def frozen(modules: list[torch.nn.Module]) -> Iterator[None]:
    """What runs inside records no gradient for ``modules``' weights (their inputs' still flow)."""
    weights = [p for module in modules for p in module.parameters() if p.requires_grad]
    for weight in weights:
        weight.requires_grad_(False)
    try:
        yield
    finally:
        for weight in weights:
            weight.requires_grad_(True)


class SimGANTrainer:
    """``semantic(refined, index)``: the task-consistency loss of refined images (in the
    networks' range) made from the synthetic images at ``index``; weighted by
    ``config.semantic_weight`` and added to the refiner's loss (None: the paper's loss).
    ``classes``: (synthetic classes, real-pool pseudo-classes, number of classes) for a
    class-conditional discriminator (None: the paper's unconditional one)."""

    def __init__(self, synthetic01: np.ndarray, real01: np.ndarray, config: SimGANParams, seed: int = 0,
                 device: str = "cpu", semantic=None, classes: tuple[np.ndarray, np.ndarray, int] | None = None):
        self.config, self.seed, self.device, self.semantic = config, seed, device, semantic
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.in_channels = channels(synthetic01.shape[1:])
        self.synthetic, self.real = to_model(synthetic01), to_model(real01)
        # the real pool's sensor statistics, which the camera's refined images must match
        self.sensor_target = sensor.pool_statistics((self.real + 1) / 2) if config.camera and config.sensor_weight else None
        self.synthetic_classes = self.real_classes = None
        if classes is not None:
            self.synthetic_classes, self.real_classes = (torch.as_tensor(c, dtype=torch.int64) for c in classes[:2])
        self.refiner = build_refiner(config, self.in_channels, read_jpeg(config, real01)).to(device)
        if self.sensor_target is not None:  # the noise starts at the real pool's, measured
            self.refiner.camera.start_noise(*sensor.noise_levels(self.sensor_target))
        self.discriminator = Discriminator(self.in_channels, config.disc_layers,
                                           classes[2] if classes is not None else 0).to(device)
        self.global_discriminator = GlobalDiscriminator(self.in_channels, synthetic01.shape[1:3],
                                                        config.disc_global).to(device) if config.disc_global else None
        self.opt_r = self.refiner_optimizer()
        self.judges = [self.discriminator] + ([self.global_discriminator] if self.global_discriminator else [])
        self.opt_d = torch.optim.Adam([p for judge in self.judges for p in judge.parameters()], lr=config.lr,
                                      betas=(0.5, 0.999))
        self.history = HistoryBuffer(config.history_size, self.generator)
        self.log: list[dict] = []
        # a fixed probe for the diversity check, drawn with its own RNG so training is unchanged
        probe = np.random.default_rng(seed).choice(len(synthetic01), min(256, len(synthetic01)), replace=False)
        self.probe = np.asarray(synthetic01, dtype=np.float32)[probe]

    def refiner_optimizer(self) -> torch.optim.Adam:
        return torch.optim.Adam(self.refiner_parameter_groups(), lr=self.config.lr, betas=(0.5, 0.999))

    def refiner_parameter_groups(self) -> list[dict]:
        camera = getattr(self.refiner, "camera", None)
        if camera is None:
            return [{"params": list(self.refiner.parameters())}]
        residual = [] if self.refiner.residual is None else list(self.refiner.residual.parameters())
        optics, sensor_ = camera.parameter_groups()
        # the sensor's statistics are noisy batch to batch: its steps average over more of them
        return [group for group in ({"params": residual}, {"params": optics, "lr": self.config.camera_lr},
                                    {"params": sensor_, "lr": self.config.camera_lr * SENSOR_LR, "betas": (0.9, 0.999)})
                if group["params"]]

    def judge(self, images: torch.Tensor, classes: torch.Tensor | None) -> list[torch.Tensor]:
        """Every discriminator's logits on ``images``: the local one's per patch, the global one's per image."""
        logits = [self.discriminator(images, classes)]
        return logits + [self.global_discriminator(images)] if self.global_discriminator else logits

    def batch(self, pool: torch.Tensor, classes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        index = self.batch_index(pool)
        return pool[index].to(self.device), None if classes is None else classes[index].to(self.device)

    def batch_index(self, pool: torch.Tensor) -> torch.Tensor:
        return torch.randint(len(pool), (self.config.batch_size,), generator=self.generator)

    def pretrain_refiner_step(self) -> float:
        synthetic, _ = self.batch(self.synthetic, None)
        scene, _ = self.refiner.parts(synthetic)
        loss = self_regularization_loss(scene, synthetic)
        if loss.requires_grad:  # the camera alone: nothing to pretrain, it starts near the identity
            self._step(self.opt_r, loss)
        return loss.item()

    def refiner_step(self) -> tuple[float, float, float]:
        index = self.batch_index(self.synthetic)
        synthetic = self.synthetic[index].to(self.device)
        scene, refined = self.refiner.parts(synthetic)
        classes = None if self.synthetic_classes is None else self.synthetic_classes[index].to(self.device)
        with frozen(self.judges):  # their weights' gradients: most of the backward pass, and unused here
            logits = self.judge(refined, classes)
        total, adversarial, regularization = refiner_loss(logits, scene, synthetic, self.config.lam, self.config.psi)
        semantic = torch.zeros(())
        if self.semantic is not None and self.config.semantic_weight:
            semantic = self.semantic(refined, index)
            total = total + self.config.semantic_weight * semantic
        if self.sensor_target is None:
            self._step(self.opt_r, total)
            return adversarial.item(), regularization.item(), semantic.item()
        # the sensor learns from its statistics alone: the game's gradient on the noise is second
        # order, and its sign is the discriminator's whim (down at first, then up past the truth)
        self.opt_r.zero_grad(set_to_none=True)
        total.backward()
        for weight in self.refiner.camera.parameter_groups()[1]:
            weight.grad = None
        (self.config.sensor_weight * self.sensor_mismatch(scene)).backward()
        self.opt_r.step()
        return adversarial.item(), regularization.item(), semantic.item()

    def sensor_mismatch(self, scene: torch.Tensor) -> torch.Tensor:
        """How far the camera's sensor statistics are from the real pool's, on a second pass of
        the sensor over the optics' image held fixed: this term steers the sensor (noise and
        grain), and the optics learn from the game. On half the batch: the statistics need no
        more pixels, and this pass was half of a refiner step's time."""
        camera, scene = self.refiner.camera, scene[: max(1, len(scene) // 2)].detach()
        with torch.no_grad():
            optics = camera.optics(scene)
        refined = camera.sensor(optics, scene)
        return sensor.mismatch((refined + 1) / 2, self.sensor_target)

    def discriminator_step(self) -> tuple[float, float, float]:
        real, real_classes = self.batch(self.real, self.real_classes)
        synthetic, classes = self.batch(self.synthetic, self.synthetic_classes)
        with torch.no_grad():
            refined = self.refiner(synthetic)
        fake, fake_classes = self.history.mix(refined, classes) if classes is not None else (self.history.mix(refined), None)
        logits_real, logits_fake = self.judge(real, real_classes), self.judge(fake, fake_classes)
        loss = discriminator_loss(logits_real, logits_fake)
        self._step(self.opt_d, loss)
        acc_real = (logits_real[0] > 0).float().mean().item()  # the local discriminator's, as the paper's
        acc_fake = (logits_fake[0] < 0).float().mean().item()
        return loss.item(), acc_real, acc_fake

    @staticmethod
    def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def train(self, progress: bool = True, on_checkpoint=None) -> list[dict]:
        """Runs the whole schedule; ``on_checkpoint(step, trainer)`` is called at each log point."""
        cfg, start = self.config, time.perf_counter()
        bar = progress_bar(total=cfg.pretrain_refiner_steps + cfg.pretrain_disc_steps + cfg.steps,
                           desc="train refiner (SimGAN)", enabled=progress)
        for _ in range(cfg.pretrain_refiner_steps):
            l1 = self.pretrain_refiner_step()
            bar.update()
        self.log.append({"phase": "pretrain_refiner", "step": 0, "reg_loss": l1 if cfg.pretrain_refiner_steps else None})
        # a fresh optimizer for the adversarial loss: Adam's second moments from the converged L1
        # pretraining are tiny, so the first adversarial gradients moved the refiner by hundreds
        # of steps at once (on 28x28 MNIST-like digits its tanh saturated black in 5 rounds, dead)
        self.opt_r = self.refiner_optimizer()
        for _ in range(cfg.pretrain_disc_steps):
            d_loss, acc_real, acc_fake = self.discriminator_step()
            bar.update()
        for step in range(1, cfg.steps + 1):
            for _ in range(cfg.kg):
                adversarial, regularization, semantic = self.refiner_step()
            for _ in range(cfg.kd):
                d_loss, acc_real, acc_fake = self.discriminator_step()
            bar.update()
            if step % cfg.log_every == 0 or step == cfg.steps:
                entry = {"phase": "adversarial", "step": step, "adv_loss": adversarial, "reg_loss": regularization,
                         "semantic_loss": semantic,
                         "d_loss": d_loss, "d_acc_real": acc_real, "d_acc_refined": acc_fake,
                         "history_size": len(self.history),
                         "diversity_ratio": diversity_ratio(self.refine(self.probe), self.probe),
                         "seconds": time.perf_counter() - start, **self.camera_settings()}
                self.log.append(entry)
                bar.set_postfix(adv=f"{adversarial:.2f}", reg=f"{regularization:.3f}", d=f"{d_loss:.2f}")
                if on_checkpoint:
                    on_checkpoint(step, self)
        bar.close()
        return self.log

    def camera_settings(self) -> dict[str, float]:
        """The learned camera's settings (``camera_`` keys), or none without a camera model."""
        camera = getattr(self.refiner, "camera", None)
        return {} if camera is None else {f"camera_{key}": value for key, value in camera.settings().items()}

    @torch.no_grad()
    def refine(self, images01: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        self.refiner.eval()
        out = [from_model(self.refiner(to_model(images01[i:i + batch_size]).to(self.device)))
               for i in range(0, len(images01), batch_size)]
        self.refiner.train()
        return np.concatenate(out) if out else np.zeros_like(images01)

    def checkpoint(self, image_shape) -> dict:
        """Plain tensors and JSON-able values only, so it loads with torch.load(weights_only=True)."""
        return {"state_dict": {k: v.detach().cpu() for k, v in self.refiner.state_dict().items()},
                "config": self.config.model_dump(mode="json", by_alias=True), "seed": self.seed,
                "in_channels": self.in_channels, "image_shape": list(image_shape)}


# what a camera refiner trained before the sensor was completed (session 38 and earlier) lacks
SENSOR_ADDED = {"camera.log_noise_white", "camera.grain", "camera.colour_logit"}


def load_refiner(path, image_shape=None, device: str = "cpu") -> Refiner:
    """Load a refiner checkpoint safely; check it fits images of ``image_shape`` before any work."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        config = SimGANParams.model_validate(checkpoint["config"])
        jpeg = torch.empty(0) if "camera.jpeg_qualities" in checkpoint["state_dict"] else None
        model = build_refiner(config, checkpoint["in_channels"], jpeg)
        keys = model.load_state_dict(checkpoint["state_dict"], strict=False)
        if keys.unexpected_keys or not set(keys.missing_keys) <= SENSOR_ADDED:
            model.load_state_dict(checkpoint["state_dict"])  # raises, naming what does not fit
        if keys.missing_keys:
            model.camera.without_new_sensor()
    except pickle.UnpicklingError as err:  # torch's text suggests weights_only=False: never for a file we did not write
        raise CheckpointError(f"{path}: not a usable refiner checkpoint (it holds Python objects, not only "
                              f"tensors; refusing to load it)") from err
    except Exception as err:
        raise CheckpointError(f"{path}: not a usable refiner checkpoint ({type(err).__name__}: {err})") from err
    if image_shape is not None and list(image_shape) != list(checkpoint["image_shape"]):
        raise CheckpointError(f"{path}: refiner trained on {checkpoint['image_shape']} images, "
                              f"data has {list(image_shape)}")
    return model.to(device).eval()
