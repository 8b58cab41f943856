"""Names shared by the ServerApp and the ClientApp: record keys, the train config and error codes."""

import re

CONSENT_KEY = "consent"
"""Key of the ConfigRecord answering a ``query``; its fields are ``CONSENT_FIELDS``."""

CONSENT_FIELDS: dict[str, type] = {
    "consent": bool,
    "reason": str,
    "can-afford": bool,
    "remaining-epsilon": float,
    "label": str,
}
"""The consent answer: consent (policy, scope, expiry), a fixed reason code, whether the proposed
round fits the workspace's remaining lifetime budget, that remaining ε, and the label its operator chose to
share (the policy's ``label``; empty when none): text the operator wrote, independent of the messages."""

LABEL = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]{0,63})?")
"""A workspace label as a node may send it: empty, or up to 64 letters, digits, ``.``, ``_``, ``-``."""

REFUSED_CODE = 1001
"""Error code of a node's refusal (no consent, or a train config it will not run)."""

REASON_CODE = re.compile(r"[a-z][a-z0-9-]{0,47}")
"""A reason code (consent answer, refusal): short and fixed, so it cannot carry text."""

REFUSAL_REASON = re.compile(r"refused: [a-z][a-z0-9-]{0,47}")
"""The error reason of a refusal: ``"refused: "`` and a reason code."""

TRAIN_METRICS = ("epsilon", "delta", "steps", "sample-rate", "noise-multiplier", "max-grad-norm", "private")
"""The only metrics a ``train`` reply may carry (next to the model arrays). Each is independent of the
workspace's messages: the mechanism's public settings (after the node's policy), the lifetime ε they
account to, and ``private`` (1, or 0 for a repeatable research run whose noise is not secret). No count,
no loss: the training-set size, the training loss and anything derived per message stay on the node."""

EVAL_METRICS: tuple[str, ...] = ()
"""The metrics an ``evaluate`` reply may carry: none. The node evaluates the model it received on its own
held-out split and keeps the result (its audit log, for its operator); a noiseless evaluation on the
workspace's data would be outside every ε."""

TRAIN_CONFIG_FIELDS: dict[str, type] = {
    "server-round": int,
    "local-steps": int,
    "sample-rate": float,
    "batch-size": int,
    "lr": float,
    "noise-multiplier": float,
    "max-grad-norm": float,
}
"""What a ``train`` message's ConfigRecord must hold, and each value's type."""
