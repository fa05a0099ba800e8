"""The project's error type for failures a user can act on."""


class StageError(Exception):
    """A stage failed for a reason the user can act on; the message names the file or record and why.

    The CLI prints it as one line and exits 1, without a traceback.
    """
