"""User-facing errors: one clear line, a non-zero exit, no traceback (unless HYDRA_FULL_ERROR=1)."""


class UserError(Exception):
    """A mistake the user can fix from the message alone; the entry point prints it as one line."""

    exit_code = 2


class ConfigError(UserError):
    """A config value that is out of range, of the wrong kind, or inconsistent with another."""


class DatasetError(UserError):
    """A dataset that is missing, corrupt, or unsafe to read."""


class CheckpointError(UserError):
    """A checkpoint that cannot belong to this run's configuration."""
