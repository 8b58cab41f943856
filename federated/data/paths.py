"""Where data lives: the data root (public corpora, read-only) and a workspace's data sub-folder.

The data root is, in order: an explicit path (a CLI option), the environment
variable ``OPTIN_DATA``, or ``../shared/data`` next to the repository root
(``<repo>/../shared/data``; this assumes the editable install the README
describes). Nothing under it is ever copied into the repository or written to.
"""

from __future__ import annotations

import os
from pathlib import Path

from federated.errors import DataError

DATA_ENV = "OPTIN_DATA"
DATA_FOLDER = "data"
"""A workspace folder's sub-folder with its messages (the layout ``clients.workspace_node`` reads)."""
IRC_CORPUS = "irc-disentanglement"


def repo_root() -> Path:
    """The repository root (this file is ``<repo>/federated/data/paths.py``)."""
    return Path(__file__).resolve().parents[2]


def resolve_data_root(option: Path | None = None) -> Path:
    """``option`` if given, else ``$OPTIN_DATA`` if set and not empty, else ``<repo>/../shared/data``."""
    if option is not None:
        return Path(option)
    env = os.environ.get(DATA_ENV, "")
    return Path(env) if env else repo_root().parent / "shared" / "data"


def irc_corpus_dir(data_root: Path) -> Path:
    """``data_root/irc-disentanglement``; ``DataError`` saying how to point at it if it is not there."""
    corpus = Path(data_root) / IRC_CORPUS
    if not (corpus / "data").is_dir():
        raise DataError(f"IRC corpus not found: {corpus / 'data'} is not a folder (set {DATA_ENV} or --data to "
                        f"the folder that holds {IRC_CORPUS}/)")
    return corpus
