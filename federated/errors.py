"""One error hierarchy for everything a user or operator can get wrong.

The CLI turns any ``OptinError`` into a one-line message and a non-zero exit;
anything else is a bug and keeps its traceback.
"""


class OptinError(Exception):
    """Base class of every error Optin raises on bad input or bad state."""


class ConfigError(OptinError):
    """A run/experiment configuration is invalid (names the key and the expected value)."""


class DataError(OptinError):
    """Workspace data is missing or malformed (names the path, and the line where known)."""


class PolicyError(OptinError):
    """A workspace policy file is missing or malformed (names the file and field)."""


class PrivacyError(OptinError):
    """A privacy computation was asked for an invalid mechanism (e.g. delta outside (0, 1))."""


class LedgerError(OptinError):
    """A workspace's privacy ledger is unreadable or inconsistent; the node refuses to train (fails closed)."""


class BudgetError(OptinError):
    """A release would take the workspace past its lifetime privacy budget."""
