import pytest
import torch

from refiner.simgan.networks import Discriminator, Refiner, count_macs


@pytest.mark.parametrize("shape", [(8, 8), (35, 55)])
def test_refiner_keeps_image_shape_and_range(shape):
    refiner = Refiner(channels=16, num_blocks=4)
    x = torch.randn(3, 1, *shape) * 3
    out = refiner(x)
    assert out.shape == (3, 1, *shape)
    assert torch.equal(out, torch.tanh(refiner.net(x)))  # the images' [-1, 1]: a tanh over the last conv


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


def test_conditional_discriminator_judges_the_image_with_its_class():
    torch.manual_seed(0)
    conditional = Discriminator(layers=((16, 1), (16, 2)), num_classes=10)
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    as_threes, as_nines = conditional(images, torch.full((4,), 3)), conditional(images, torch.full((4,), 9))
    assert as_threes.shape == (4, 16)
    assert not torch.allclose(as_threes, as_nines)  # the same image scores differently by class
    unconditional = Discriminator(layers=((16, 1), (16, 2)))
    assert unconditional.embedding is None and unconditional(images).shape == (4, 16)


def test_conditional_discriminator_embeds_only_the_classes_it_is_given():
    conditional = Discriminator(layers=((8, 1),), num_classes=10)
    conditional(torch.rand(2, 1, 8, 8), torch.tensor([2, 5])).sum().backward()
    touched = conditional.embedding.weight.grad.abs().sum(1).nonzero().flatten().tolist()
    assert touched == [2, 5]


def test_a_conditional_simgan_trains_its_class_embeddings_and_keeps_classes_in_its_history():
    import numpy as np
    from refiner.config import SimGANParams
    from refiner.simgan.trainer import SimGANTrainer
    rng = np.random.default_rng(0)
    synthetic, real = rng.random((40, 8, 8), dtype=np.float32), rng.random((30, 8, 8), dtype=np.float32)
    config = SimGANParams(channels=4, num_blocks=1, disc_layers=[[8, 1]], batch_size=8, pretrain_refiner_steps=1,
                          pretrain_disc_steps=2, steps=2, history_size=16, conditional=True)
    trainer = SimGANTrainer(synthetic, real, config, classes=(np.arange(40) % 10, np.arange(30) % 10, 10))
    before = trainer.discriminator.embedding.weight.detach().clone()
    trainer.train(progress=False)
    assert not torch.equal(trainer.discriminator.embedding.weight, before)
    assert trainer.history.classes is not None and len(trainer.history) > 0


def test_the_adversarial_phase_starts_with_a_fresh_refiner_optimizer():
    # Adam's moments from the L1 pretraining made the first adversarial steps huge (a 28x28
    # digits refiner saturated black in 5 rounds): the adversarial phase must start afresh
    import numpy as np
    from refiner.config import SimGANParams
    from refiner.simgan.trainer import SimGANTrainer
    rng = np.random.default_rng(0)
    synthetic, real = rng.random((40, 8, 8), dtype=np.float32), rng.random((30, 8, 8), dtype=np.float32)
    config = SimGANParams(channels=4, num_blocks=1, disc_layers=[[8, 1]], batch_size=8, pretrain_refiner_steps=5,
                          pretrain_disc_steps=1, steps=3, kg=2, conditional=False)
    trainer = SimGANTrainer(synthetic, real, config)
    trainer.train(progress=False)
    steps = {int(state["step"]) for state in trainer.opt_r.state.values()}
    assert steps == {config.steps * config.kg}


def test_the_refiners_step_computes_no_gradient_for_the_discriminators_weights():
    """Its gradients for the judges' weights would be thrown away at their own step's
    zero_grad: not computed at all, and the weights train again in their own step."""
    import numpy as np
    from refiner.config import SimGANParams
    from refiner.simgan.trainer import SimGANTrainer
    rng = np.random.default_rng(0)
    synthetic, real = rng.random((40, 8, 8), dtype=np.float32), rng.random((30, 8, 8), dtype=np.float32)
    config = SimGANParams(channels=4, num_blocks=1, disc_layers=[[8, 1]], batch_size=8, disc_global=8, conditional=False)
    trainer = SimGANTrainer(synthetic, real, config)
    judges = [p for judge in (trainer.discriminator, trainer.global_discriminator) for p in judge.parameters()]
    trainer.refiner_step()
    assert all(p.grad is None for p in judges) and all(p.requires_grad for p in judges)
    assert all(p.grad is not None for p in trainer.refiner.parameters())
    trainer.discriminator_step()
    assert all(p.grad is not None for p in judges)
