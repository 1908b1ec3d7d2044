"""Errors a user can cause. The CLI prints any of these as one line and exits non-zero."""


class OatError(Exception):
    """Base class for every user-facing error: bad input, bad data, bad checkpoint."""


class ConfigError(OatError, ValueError):
    """An unknown option, a value of the wrong type, or values that do not fit together."""


class ConvertError(ConfigError):
    """A user's network that ``oat.convert`` cannot turn into an OAT model, or a model file that does not run."""


class DataError(OatError):
    """Missing, truncated, corrupt or mismatched data files."""


class CheckpointError(OatError):
    """A checkpoint that is missing, truncated, corrupt, or of another architecture/spec/format."""


class LamError(OatError, ValueError):
    """A λ outside [0, 1], or one the model's encoding was not trained for."""


class WidthError(OatError, ValueError):
    """A width multiplier the model was not trained for."""


class RunFolderError(OatError):
    """A run folder that already holds a run (and neither --resume nor --overwrite was given)."""


class TrainingInterrupted(OatError):
    """SIGINT/SIGTERM stopped training at a safe point, after saving a checkpoint.

    The CLI exits with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
