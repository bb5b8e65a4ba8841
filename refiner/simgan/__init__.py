"""The refiner: the paper's SimGAN (networks, losses, history buffer, the training schedule),
what conditions it on the task (a frozen synthetic-trained estimator: pseudo-classes for the
class-conditional discriminator, the semantic term), and the Ray Data job that refines
datasets at scale."""
