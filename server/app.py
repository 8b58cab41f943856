"""Optin's ServerApp: consent-gated FedAvg of locally DP-trained models, then federated evaluation.

Round 0 evaluates the initial model on the consenting nodes' held-out splits,
so every run shows what training changed. With ``dp-mode`` "central" or "both" the same consent-aware
strategy aggregates with ``server.central_dp.CentralDP`` (workspace-level DP-FedAvg: clip, average, noise). With ``results-dir`` set, the run's
``metrics.json`` and the server's audit log (``audit.jsonl``) are written there.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from federated.audit import AUDIT_FILE, AuditLog
from federated.config import CENTRAL_MODES, RunConfig
from federated.inprocess import InProcessGrid
from federated.tasks import get_task
from federated.tasks.checkpoint import initial_state_dict
from federated.tasks.model_file import privacy_claims, save_model
from server.central_dp import CentralDP
from server.reply_polling import PollingGrid
from server.run_record import RunRecord
from server.strategy import ConsentAwareFedAvg

log = logging.getLogger("optin.server")

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-rounds`` consent-aware FedAvg rounds as configured in the run config."""
    _log_to_run_stream()
    if not isinstance(grid, InProcessGrid):  # which answers at once; Flower's grids pull replies every few seconds
        grid = PollingGrid(grid)
    config = RunConfig.from_mapping(context.run_config)
    task = get_task(config.task, config.seq_len)
    record = RunRecord(config=config.to_mapping())
    proposal = ConfigRecord({
        "server-round": 0,
        "local-steps": config.local_steps,
        "sample-rate": config.sample_rate,
        "batch-size": config.batch_size,
        "lr": config.lr,
        "noise-multiplier": config.noise_multiplier,
        "max-grad-norm": config.max_grad_norm,
    })
    audit = AuditLog(Path(config.results_dir) / AUDIT_FILE) if config.results_dir else None
    strategy = ConsentAwareFedAvg(record, proposal, audit=audit, fraction_train=config.fraction_train,
                                  fraction_evaluate=config.fraction_evaluate, min_train_nodes=config.min_train_nodes,
                                  min_available_nodes=config.min_available_nodes, seed=config.seed,
                                  reply_timeout=config.reply_timeout, num_rounds=config.num_rounds,
                                  aggregate=CentralDP.from_config(config, record)
                                  if config.dp_mode in CENTRAL_MODES else None)
    arrays = ArrayRecord(initial_state_dict(task, config.seed, config.init_model))

    initial = grid.send_and_receive(strategy.configure_evaluate(0, arrays, ConfigRecord(), grid),
                                    timeout=strategy.reply_timeout)
    strategy.aggregate_evaluate(0, initial)
    result = strategy.start(grid, arrays, num_rounds=config.num_rounds, timeout=strategy.reply_timeout,
                            train_config=ConfigRecord(dict(proposal)))
    if config.results_dir:
        path = Path(config.results_dir) / "metrics.json"
        record.write(path)
        log.info("wrote %s", path)
        card = save_model(Path(config.results_dir), task, result.arrays.to_torch_state_dict(),
                          run_id=str(context.run_id), config=config, rounds=_rounds(record),
                          privacy=_privacy(config, record))
        log.info("wrote the final global model and its card %s", card)


def _rounds(record: RunRecord) -> dict[str, object]:
    """The rounds asked for, and those whose aggregate changed the model (enough updates were accepted)."""
    updated = [n for n, r in sorted(record.rounds.items()) if "updates" in r.metrics]
    return {"configured": int(record.config["num-rounds"]), "updated": updated}


def _privacy(config: RunConfig, record: RunRecord) -> dict[str, object]:
    """The model's privacy claims: the central ε the server's accountant reported last (None if nothing was
    released centrally), and how many averaged updates their nodes marked not private (repeatable seed)."""
    central = [r.metrics["central-epsilon"] for _, r in sorted(record.rounds.items()) if "central-epsilon" in r.metrics]
    not_private = sum(int(r.metrics.get("not-private-updates", 0)) for r in record.rounds.values())
    return privacy_claims(config, central[-1] if central else None, not_private)


def _log_to_run_stream() -> None:
    """Show the server's INFO lines (who trained, who was skipped and why) where the run's submitter looks.

    Flower's ``flwr-serverapp`` forwards what the ServerApp writes to stdout to ``flwr run --stream`` and
    ``flwr log``, but leaves Optin's loggers at the root's level (warnings only). A process that set
    up logging itself (``optin demo`` writes them to the run's log file) is left as it is.
    """
    logger = logging.getLogger("optin")
    if logger.handlers:
        return
    logger.setLevel(logging.INFO)
    if not logging.getLogger().handlers:  # else Flower's own handlers print them, to the same stream
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(levelname)s optin: %(message)s"))
        logger.addHandler(handler)
