"""The estimator: the downstream model of a task (the paper's word), trained on synthetic,
refined or (for the oracle reference only) real images, then tested on real labelled ones:
the training recipe (``training``), its networks (``networks``) and checkpoints (``checkpoint``)."""
