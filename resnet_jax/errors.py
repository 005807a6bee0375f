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


class StorageFull(UserError):
    """A run directory's disk is full or over quota: the run stops where it is, and resumes once there is
    space (exit 1, as a failed run: nothing in the command line was wrong)."""

    exit_code = 1
