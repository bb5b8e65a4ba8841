"""The refiner sized to the images: the local discriminator's patch grows with them, a
discriminator at chance for a whole run is told apart from one the refiner fooled late."""

from refiner.config import SimGANParams
from refiner.simgan import sizing
from refiner.simgan.trainer import discriminator_at_chance


def test_the_patch_is_the_papers_on_digits_and_grows_with_the_image():
    assert sizing.receptive_field(SimGANParams().disc_layers) == 5  # two stride-1 3x3 convolutions
    assert sizing.sized((8, 8)) == {}
    for shape in ((28, 28), (35, 55), (64, 64, 3), (128, 96, 3)):
        patch = sizing.receptive_field(sizing.sized(shape)["disc_layers"])
        assert sizing.PATCH_SHARE * min(shape[:2]) <= patch < 2.5 * sizing.PATCH_SHARE * min(shape[:2]), shape
    assert sizing.sized((64, 64, 3))["channels"] < sizing.sized((28, 28))["channels"]  # narrower as pixels grow


def test_training_minutes_are_timed_and_grow_with_the_rounds():
    config = SimGANParams(channels=4, num_blocks=1, batch_size=8, disc_layers=((8, 1),), steps=10,
                          pretrain_refiner_steps=0, pretrain_disc_steps=0)
    short, long = (sizing.training_minutes(config.model_copy(update={"steps": steps}), (8, 8)) for steps in (10, 1000))
    assert 0 < short < long


def entry(real, refined):
    return {"phase": "adversarial", "d_acc_real": real, "d_acc_refined": refined}


def test_a_discriminator_at_chance_all_run_is_flagged_and_one_fooled_late_is_not():
    assert discriminator_at_chance([entry(0.55, 0.5), entry(0.5, 0.52)])
    assert not discriminator_at_chance([entry(0.9, 0.8), entry(0.5, 0.5)])
    assert not discriminator_at_chance([{"phase": "pretrain_refiner"}])
