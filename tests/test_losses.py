import math

import torch

from refiner.simgan.losses import discriminator_loss, local_adversarial_loss, refiner_loss, self_regularization_loss


def test_adversarial_loss_is_mean_patch_cross_entropy():
    undecided = torch.zeros(4, 16)
    assert math.isclose(local_adversarial_loss(undecided, True).item(), math.log(2), rel_tol=1e-6)
    confident_real = torch.full((4, 16), 20.0)
    assert local_adversarial_loss(confident_real, True).item() < 1e-6
    assert local_adversarial_loss(confident_real, False).item() > 19


def test_adversarial_loss_averages_over_patches():
    logits = torch.zeros(2, 4)
    logits[:, 0] = 20.0  # one confident patch of four
    expected = 3 / 4 * math.log(2)
    assert math.isclose(local_adversarial_loss(logits, True).item(), expected, rel_tol=1e-4)


def test_self_regularization_is_l1():
    synthetic = torch.zeros(2, 1, 8, 8)
    refined = synthetic.clone()
    assert self_regularization_loss(refined, synthetic).item() == 0
    refined[0, 0, 0, 0] = 1.0
    assert math.isclose(self_regularization_loss(refined, synthetic).item(), 1 / 128, rel_tol=1e-6)


def test_refiner_loss_weights_self_regularization_by_lambda():
    logits = torch.zeros(2, 4)
    synthetic, refined = torch.zeros(2, 1, 8, 8), torch.full((2, 1, 8, 8), 0.5)
    total, adversarial, reg = refiner_loss([logits], refined, synthetic, lam=3.0)
    assert math.isclose(total.item(), adversarial.item() + 3.0 * reg.item(), rel_tol=1e-6)
    assert math.isclose(reg.item(), 0.5, rel_tol=1e-6)


def test_refiner_loss_gradient_pulls_towards_synthetic_and_realism():
    refined = torch.full((1, 1, 8, 8), 0.5, requires_grad=True)
    total, _, _ = refiner_loss([torch.zeros(1, 4)], refined, torch.zeros(1, 1, 8, 8), lam=1.0)
    total.backward()
    assert (refined.grad > 0).all()  # decreasing refined moves it towards the synthetic zeros


def test_discriminator_loss_low_when_right_high_when_wrong():
    right = discriminator_loss([torch.full((2, 4), 10.0)], [torch.full((2, 4), -10.0)])
    wrong = discriminator_loss([torch.full((2, 4), -10.0)], [torch.full((2, 4), 10.0)])
    assert right.item() < 1e-3 < 5 < wrong.item()


def test_blurred_self_regularization_forgives_a_one_pixel_shift_more_than_pixels():
    from refiner.simgan.losses import self_regularization_loss
    image = torch.zeros(1, 1, 8, 8)
    image[..., 2:6, 3] = 1.0  # a vertical stroke
    shifted = torch.roll(image, 1, dims=-1)  # the same stroke one pixel to the right
    pixels, blurred = self_regularization_loss(shifted, image, "pixels"), self_regularization_loss(shifted, image, "blur")
    assert blurred < 0.5 * pixels
    assert self_regularization_loss(image, image, "blur") == 0


class OneHotReader(torch.nn.Module):
    """A perfect estimator for images that carry their class as a bright pixel in row 0."""
    def forward(self, x):
        return 100.0 * x[:, 0, 0, :]


def test_semantic_loss_is_zero_for_an_identity_refiner_and_a_perfect_estimator():
    import numpy as np
    from refiner.simgan.conditioning import semantic_loss
    from refiner.tasks.heads import ClassificationHead
    targets = np.arange(8)
    images01 = torch.zeros(8, 1, 8, 8)
    images01[torch.arange(8), 0, 0, torch.arange(8)] = 1.0
    loss = semantic_loss(ClassificationHead(8), OneHotReader(), targets)
    identity_refined = images01 * 2 - 1  # the networks' range
    assert loss(identity_refined, torch.arange(8)).item() < 1e-6
    wrong = torch.roll(identity_refined, 1, dims=-1)  # every image now reads as the next class
    assert loss(wrong, torch.arange(8)).item() > 10


def test_semantic_loss_trains_the_refiner_and_never_the_frozen_estimator():
    import numpy as np
    from refiner.simgan.conditioning import semantic_loss
    from refiner.simgan.networks import Refiner
    from tests.helpers import world
    head = world("digits").head
    estimator, refiner = head.estimator((8, 8)), Refiner(1, 4, 1)
    loss = semantic_loss(head, estimator, np.arange(6) % 10)
    loss(refiner(torch.rand(6, 1, 8, 8) * 2 - 1), torch.arange(6)).backward()
    assert all(p.grad is None and not p.requires_grad for p in estimator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in refiner.parameters())
    assert not estimator.training  # dropout off: the frozen estimator is a fixed function


def test_balanced_pseudo_labels_give_every_class_its_share_to_its_likeliest_images():
    import numpy as np
    from refiner.estimator.training import balanced_pseudo_labels
    # a model that reads every image as a 3: the nines are the ones it finds a little more 9-like
    probabilities = np.tile([0.0] * 3 + [0.8] + [0.0] * 5 + [0.2], (10, 1))
    probabilities[5:, 9], probabilities[5:, 3] = 0.3, 0.7
    prior = np.zeros(10)
    prior[[3, 9]] = 1
    labels = balanced_pseudo_labels(probabilities, prior)
    assert labels.tolist() == [3] * 5 + [9] * 5
    assert probabilities.argmax(1).tolist() == [3] * 10  # plain argmax would have given no 9 at all
