"""One error hierarchy for everything a user or operator can get wrong.

The CLI turns any ``OptinError`` into a one-line message and a non-zero exit;
anything else is a bug and keeps its traceback. Each class carries ``code``: the
fixed reason code a node sends when it refuses a message because of that error
(a code names the kind of problem only; the detail stays on the node).
"""


class OptinError(Exception):
    """Base class of every error Optin raises on bad input or bad state."""

    code = "refused"


class ConfigError(OptinError):
    """A run/experiment configuration is invalid (names the key and the expected value)."""

    code = "bad-config"


class DataError(OptinError):
    """Workspace data is missing or malformed (names the path, and the line where known)."""

    code = "data-error"


class PolicyError(OptinError):
    """A workspace policy file is missing or malformed (names the file and field)."""

    code = "policy-invalid"


class PrivacyError(OptinError):
    """A privacy computation was asked for an invalid mechanism (e.g. delta outside (0, 1))."""

    code = "bad-config"


class LedgerError(OptinError):
    """A workspace's privacy ledger is unreadable or inconsistent; the node refuses to train (fails closed)."""

    code = "ledger-unsound"


class BudgetError(OptinError):
    """A release would take the workspace past its lifetime privacy budget."""

    code = "budget-exhausted"


class ReplayError(OptinError):
    """A release was asked for a (run, round) the workspace already released: answering twice would give the
    server two noisy views of one round's update."""

    code = "round-already-released"


class UnitChangeError(OptinError):
    """The policy's privacy unit differs from the unit earlier releases were accounted under, in a direction the
    ledger cannot account soundly (message-level releases do not bound member-level privacy)."""

    code = "privacy-unit-changed"


class LockError(OptinError):
    """Another process holds the workspace's lock for longer than the node waits."""

    code = "workspace-busy"
