"""SimGAN losses. Discriminator logits are per patch; every patch is one cross-entropy term."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def local_adversarial_loss(patch_logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Mean binary cross-entropy over all patches of all images (the paper's local loss)."""
    target = torch.full_like(patch_logits, 1.0 if target_is_real else 0.0)
    return F.binary_cross_entropy_with_logits(patch_logits, target)


def self_regularization_loss(refined: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
    """L1 distance between refined and synthetic pixels (psi = identity): keeps labels true."""
    return (refined - synthetic).abs().mean()


def refiner_loss(patch_logits_on_refined: torch.Tensor, refined: torch.Tensor, synthetic: torch.Tensor,
                 lam: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Realism (fool D) + lambda * self-regularization; returns (total, adversarial, reg)."""
    adversarial = local_adversarial_loss(patch_logits_on_refined, target_is_real=True)
    regularization = self_regularization_loss(refined, synthetic)
    return adversarial + lam * regularization, adversarial, regularization


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (local_adversarial_loss(logits_real, True) + local_adversarial_loss(logits_fake, False))
