"""The refusals: an input that breaks a contract. Each message names the file (or the params
key) and the problem, and a stage ends with it in one line, not a traceback."""


class Refused(ValueError):
    """An input the project will not take; the message says which and why."""


class ParamsError(Refused):
    """params.yaml (or an override of it) breaks the params model; says which key and why."""


class DatasetError(Refused):
    """A dataset (or one of its files) breaks the contract; the message names which and why."""


class CheckpointError(Refused):
    """A checkpoint is unreadable or does not fit the data or the task."""
