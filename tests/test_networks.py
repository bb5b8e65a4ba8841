import pytest
import torch

from refiner.networks import Discriminator, Refiner, count_macs


@pytest.mark.parametrize("shape", [(8, 8), (35, 55)])
def test_refiner_keeps_image_shape_and_range(shape):
    refiner = Refiner(channels=16, num_blocks=4)
    out = refiner(torch.randn(3, 1, *shape) * 3)
    assert out.shape == (3, 1, *shape)
    assert out.abs().max() <= 1


def test_refiner_follows_paper_layout():
    refiner = Refiner(channels=64, num_blocks=4)
    convs = [m for m in refiner.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 4 * 2 + 1
    assert convs[0].kernel_size == (3, 3) and convs[-1].kernel_size == (1, 1)
    assert all(c.stride == (1, 1) for c in convs)  # no striding: pixels stay aligned


def test_discriminator_outputs_one_logit_per_patch():
    local = Discriminator(layers=((32, 1), (64, 1)))
    assert local(torch.zeros(5, 1, 8, 8)).shape == (5, 64)
    strided = Discriminator(layers=((32, 1), (64, 2)))
    assert strided(torch.zeros(5, 1, 8, 8)).shape == (5, 16)
    assert strided(torch.zeros(2, 1, 36, 56)).shape == (2, 18 * 28)


def test_count_macs_matches_hand_count():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1))
    assert count_macs(model, (8, 8)) == 8 * 8 * 4 * 9
