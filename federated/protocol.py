"""Names shared by the ServerApp and the ClientApp: record keys, the train config and error codes."""

CONSENT_KEY = "consent"
"""Key of the ConfigRecord answering a ``query``; its fields are ``CONSENT_FIELDS``."""

CONSENT_FIELDS: dict[str, type] = {
    "consent": bool,
    "reason": str,
    "can-afford": bool,
    "remaining-epsilon": float,
}
"""The consent answer: consent (policy, scope, expiry), a fixed reason code, whether the proposed
round fits the workspace's remaining lifetime budget, and that remaining ε."""

REFUSED_CODE = 1001
"""Error code of a node's refusal (no consent, or a train config it will not run)."""

TRAIN_METRICS = ("num-examples", "train-loss", "epsilon", "delta", "steps", "sample-rate", "noise-multiplier")
"""The only metrics a ``train`` reply may carry (next to the model arrays)."""

EVAL_METRICS = ("num-examples", "eval-loss", "eval-accuracy")
"""The only metrics an ``evaluate`` reply may carry."""

TRAIN_CONFIG_FIELDS: dict[str, type] = {
    "server-round": int,
    "local-steps": int,
    "batch-size": int,
    "lr": float,
    "noise-multiplier": float,
    "max-grad-norm": float,
}
"""What a ``train`` message's ConfigRecord must hold, and each value's type."""
