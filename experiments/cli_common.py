"""What every ``optin`` command shares: the console and the one-line error exit."""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

# Soft wrap: a long path or error stays on one line (scripts and tests read it whole).
console = Console(soft_wrap=True)


def fail(exc: Exception | str) -> NoReturn:
    """Print a user mistake as one line (no traceback) and exit with status 1."""
    # Escaped: an error quoting "[scope]" or a path with brackets must print as written, not as markup.
    console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    sys.exit(1)
