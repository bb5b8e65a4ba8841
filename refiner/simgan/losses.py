"""SimGAN losses. Discriminator logits are per patch; every patch is one cross-entropy term."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def local_adversarial_loss(patch_logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Mean binary cross-entropy over all patches of all images (the paper's local loss)."""
    target = torch.full_like(patch_logits, 1.0 if target_is_real else 0.0)
    return F.binary_cross_entropy_with_logits(patch_logits, target)


def psi(images: torch.Tensor, space: str = "pixels") -> torch.Tensor:
    """The paper's feature transform for self-regularization: identity, or a 3x3 box blur
    (a stroke shifted by one pixel changes the blurred image far less than the pixels)."""
    if space == "pixels":
        return images
    if space == "blur":
        return F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown self-regularization space {space!r}")


def self_regularization_loss(refined: torch.Tensor, synthetic: torch.Tensor, space: str = "pixels") -> torch.Tensor:
    """L1 distance between psi(refined) and psi(synthetic): keeps labels true."""
    return (psi(refined, space) - psi(synthetic, space)).abs().mean()


def adversarial_loss(logits: list[torch.Tensor], target_is_real: bool) -> torch.Tensor:
    """The sum over discriminators (the local one's patches, a global one's images), each a mean."""
    return sum(local_adversarial_loss(part, target_is_real) for part in logits)


def refiner_loss(logits_on_refined: list[torch.Tensor], refined: torch.Tensor, synthetic: torch.Tensor,
                 lam: float, space: str = "pixels") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Realism (fool every D) + lambda * self-regularization; returns (total, adversarial, reg).
    ``refined``: what the self-regularization holds (with a camera model, the scene before it)."""
    adversarial = adversarial_loss(logits_on_refined, target_is_real=True)
    regularization = self_regularization_loss(refined, synthetic, space)
    return adversarial + lam * regularization, adversarial, regularization


def discriminator_loss(logits_real: list[torch.Tensor], logits_fake: list[torch.Tensor]) -> torch.Tensor:
    return 0.5 * (adversarial_loss(logits_real, True) + adversarial_loss(logits_fake, False))
