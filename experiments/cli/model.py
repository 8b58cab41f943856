"""``optin complete`` and ``optin evaluate``: use a run's saved global model (``federated.tasks.model_file``)."""

from __future__ import annotations

from pathlib import Path

import typer

from experiments.cli.common import console, fail
from federated.errors import OptinError

MODEL_HELP = "A run folder holding model.json and model.safetensors, or either file."


def complete(
    model: Path = typer.Argument(..., help=MODEL_HELP),
    prefix: str = typer.Option(..., "--prefix", help="The start of a message (may be empty)."),
    length: int = typer.Option(32, "--length", min=1, help="Bytes to generate; prefix + length fit in seq_len."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0: greedy (most likely byte); "
                                      "above 0: sample from the softmax of logits / temperature."),
    samples: int = typer.Option(1, "--samples", min=1, help="How many completions to print."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling (same seed, same completions)."),
) -> None:
    """Print completions of a message prefix, one per line (control characters escaped, invalid UTF-8 as U+FFFD).

    Example: optin complete results/20260101-120000-demo --prefix "see you " --length 20 --temperature 0.8 --samples 3
    """
    import torch

    from federated.tasks.completion import complete as complete_prefix, render
    from federated.tasks.model_file import load_model

    try:
        loaded = load_model(model)
        generator = torch.Generator().manual_seed(seed)
        completions = complete_prefix(loaded.task, loaded.model, prefix, length, temperature=temperature,
                                      samples=samples, generator=generator)
    except OptinError as exc:
        fail(exc)
    for completion in completions:
        console.print(render(prefix, completion), markup=False, highlight=False, soft_wrap=True)


def evaluate(
    model: Path = typer.Argument(..., help=MODEL_HELP),
    workspace: Path = typer.Argument(..., help="A workspace folder (data/, policy.toml, ...); it need not have "
                                               "trained or consented."),
) -> None:
    """Held-out accuracy and loss of a saved model on one workspace, beside unigram and bigram baselines.

    Runs on this machine only and sends nothing; writes nothing to the ledger or audit log. The held-out split
    is the one the workspace's node evaluates on.

    Example: optin evaluate results/20260101-120000-demo ./acme
    """
    from rich.table import Table

    from experiments.runners.local_evaluation import evaluate_locally
    from federated.tasks.model_file import load_model

    try:
        loaded = load_model(model)
        result = evaluate_locally(loaded, workspace)
    except OptinError as exc:
        fail(exc)
    card = loaded.card
    console.print(f"Model: task {card['task']}, seq_len {card['seq_len']}, run {card['run_id']} "
                  f"({card['rounds'].get('configured', '?')} rounds)", highlight=False)
    source = "policy.toml" if result.policy_found else "the default (no policy.toml)"
    console.print(f"Workspace {result.workspace}: {result.held_out_messages} held-out messages, "
                  f"{result.held_out_bytes} bytes predicted (held_out_fraction {result.held_out_fraction:g} from "
                  f"{source})", highlight=False)
    table = Table(title="Held-out split (baselines fitted on this workspace's training split)")
    for column in ("predictor", "accuracy", "loss (nats/byte)"):
        table.add_column(column, justify="left" if column == "predictor" else "right", no_wrap=True)
    for name, scores in result.scores.items():
        table.add_row(name, f"{scores['accuracy']:.4f}", f"{scores['loss']:.4f}")
    console.print(table)
    if result.secret_created:
        console.print(f"Created {result.workspace / 'node.secret'}: it keys the held-out split, as the node "
                      "does on first use.", highlight=False)
    console.print("Nothing was sent; the ledger and audit log were not written.", highlight=False)
