"""The one error type of the export stage: an input file that cannot be used, and why."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the model; the message says which."""
