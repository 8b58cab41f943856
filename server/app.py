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
    arrays = ArrayRecord(task.build_model(config.seed).state_dict())

    initial = grid.send_and_receive(strategy.configure_evaluate(0, arrays, ConfigRecord(), grid),
                                    timeout=strategy.reply_timeout)
    strategy.aggregate_evaluate(0, initial)
    strategy.start(grid, arrays, num_rounds=config.num_rounds, timeout=strategy.reply_timeout,
                 train_config=ConfigRecord(dict(proposal)))
    if config.results_dir:
        path = Path(config.results_dir) / "metrics.json"
        record.write(path)
        log.info("wrote %s", path)


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
