"""One exception type for every user-facing failure.

Scripts catch :class:`STCLNError` at the top of ``main`` and print its message as a single
line (``error: <message>``) before exiting with status 2, so bad input never produces a wall of
traceback. Messages always name the file (or flag) at fault and the problem.
"""


class STCLNError(Exception):
    """A problem with the user's input: a file, a flag or a checkpoint."""


class DataError(STCLNError):
    """A dataset file is missing, corrupted, or does not match the expected format."""


class CheckpointError(STCLNError):
    """A checkpoint cannot be read or does not fit the model."""
