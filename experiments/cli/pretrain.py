"""``optin pretrain``: the next-byte model pretrained on public IRC text (``federated.tasks.pretrain``)."""

from __future__ import annotations

from pathlib import Path

import typer

from experiments.cli.common import console, fail
from federated.errors import OptinError


def pretrain(
    out: Path = typer.Option(..., "--out", help="Checkpoint file to write (never overwritten)."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Adam steps (default: federated.tasks.pretrain's "
                                                                   "DEFAULT_STEPS)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial weights and the batch order."),
    data: Path | None = typer.Option(None, "--data", help="Data root holding irc-disentanglement/ "
                                     "(default: $OPTIN_DATA, else ../shared/data next to the repo)."),
) -> None:
    """Pretrain the nextchar model on #ubuntu 2004-2011 (public, CC-BY-4.0) and write a checkpoint.

    The checkpoint's metadata lists every corpus file read, with its SHA-256; none belongs to the IRC
    evaluation workspaces. Start a run from it with the run config key init-model = "PATH".
    Example: optin pretrain --out pretrained.safetensors --steps 2000
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from federated.data import irc_corpus_dir, resolve_data_root
    from federated.tasks.checkpoint import save_checkpoint
    from federated.tasks.pretrain import DEFAULT_STEPS, PRETRAIN_PARTITIONS
    from federated.tasks.pretrain import pretrain as run_pretraining

    total = steps or DEFAULT_STEPS
    try:
        if out.exists():
            fail(f"{out}: refusing to overwrite an existing file")
        corpus = irc_corpus_dir(resolve_data_root(data))
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console) as progress:
            bar = progress.add_task("pretraining", total=total)
            state, metadata = run_pretraining(
                corpus, PRETRAIN_PARTITIONS, total, seed,
                progress=lambda step, loss: progress.update(bar, completed=step,
                                                            description=f"pretraining (loss {loss:.3f})"))
        save_checkpoint(out, state, metadata)
    except OptinError as exc:
        fail(exc)
    console.print(f"{metadata['messages']:,} messages from {len(metadata['files'])} files "
                  f"({', '.join(metadata['partitions'])}); final training loss {metadata['final_train_loss']:.3f}")
    console.print(f"Wrote {out}")
