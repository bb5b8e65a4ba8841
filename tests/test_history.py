import pytest
import torch

from refiner.simgan.history import HistoryBuffer


def batch(value, n=8):
    return torch.full((n, 1, 4, 4), float(value))


def test_fills_to_capacity_and_never_beyond():
    history = HistoryBuffer(capacity=20)
    sizes = []
    for step in range(6):
        history.push(batch(step))
        sizes.append(len(history))
    assert sizes == [8, 16, 20, 20, 20, 20]
    assert history.images.shape[0] == 20


def test_sample_returns_earlier_images():
    history = HistoryBuffer(capacity=16)
    history.push(batch(7))
    sampled = history.sample(32)
    assert sampled.shape == (32, 1, 4, 4)
    assert torch.all(sampled == 7)


def test_full_buffer_replaces_random_old_entries():
    history = HistoryBuffer(capacity=16, generator=torch.Generator().manual_seed(1))
    history.push(batch(1, 16))
    history.push(batch(2, 4))
    values = history.images[:, 0, 0, 0]
    assert (values == 2).sum() == 4 and (values == 1).sum() == 12


def test_mix_uses_half_history_once_it_holds_images():
    history = HistoryBuffer(capacity=64)
    first = history.mix(batch(1))
    assert torch.all(first == 1) and len(first) == 8  # empty history: all current
    assert len(history) == 4  # half of the batch went in
    second = history.mix(batch(2))
    assert len(second) == 8
    assert (second[:, 0, 0, 0] == 2).sum() == 4 and (second[:, 0, 0, 0] == 1).sum() == 4


def test_history_keeps_copies_not_views():
    history = HistoryBuffer(capacity=8)
    images = batch(1)
    history.push(images)
    images.fill_(9)
    assert torch.all(history.sample(8) == 1)


def test_rejects_non_positive_capacity():
    with pytest.raises(ValueError, match="capacity"):
        HistoryBuffer(0)


def test_mix_keeps_each_images_class_beside_it():
    history = HistoryBuffer(capacity=64, generator=torch.Generator().manual_seed(3))
    for step in range(5):
        classes = torch.arange(8) + 10 * step
        images = classes.float().view(8, 1, 1, 1).expand(8, 1, 4, 4).clone()  # each image holds its class
        batch, batch_classes = history.mix(images, classes)
        assert torch.equal(batch[:, 0, 0, 0].long(), batch_classes)
    assert len(history) == 20 and torch.equal(history.images[:20, 0, 0, 0].long(), history.classes[:20])
    assert batch_classes.max() >= 40 and batch_classes.min() < 40  # current and past halves
