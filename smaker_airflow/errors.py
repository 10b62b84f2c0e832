"""One family of errors for everything a user can get wrong.

Every error a user can cause is a ``SmakerError``: the CLI prints its message
(no traceback) and exits non-zero; the DAG loader turns it into an import error
that names the config. The message names the file, the key or rule, and the fix.
"""

from __future__ import annotations


class SmakerError(Exception):
    """Root of every error smaker-airflow raises for a user's mistake."""


class ConfigError(SmakerError):
    """A YAML config is invalid: the message names the file and the key."""

    def __init__(self, path: str, key: str, message: str) -> None:
        self.path = path
        self.key = key
        self.detail = message
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {message}")


class WorkflowError(SmakerError):
    """Snakemake could not build the job DAG (syntax error, missing input, cycle...)."""


class OverrideError(SmakerError):
    """A run-time value (trigger form, CLI --set, --arms) is unsafe or does not fit the DAG."""


class JobFailed(SmakerError):
    """One Snakemake job exited non-zero; the message carries the tail of its log."""
