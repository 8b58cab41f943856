"""What every ``optin`` command shares: the consoles, the one-line error exit and the exit codes.

Exit codes of ``optin``: 0 done; 1 an error (bad input, a file that cannot be read, a check that failed: one
``error:`` line on stderr); 2 a usage error (Click's: an unknown option, a missing argument); 3 an audit found
a privacy claim violated (``optin audit canaries``, ``optin sweep`` with audits); 130 interrupted (Ctrl-C,
SIGTERM). ``optin node`` and ``optin server superlink`` otherwise end with their Flower process's code.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

EXIT_ERROR = 1
EXIT_AUDIT_FAILED = 3

# Soft wrap: a long path or error stays on one line (scripts and tests read it whole).
console = Console(soft_wrap=True)
errors = Console(soft_wrap=True, stderr=True)


def fail(exc: Exception | str) -> NoReturn:
    """Print a user mistake as one line on stderr (no traceback) and exit with ``EXIT_ERROR``."""
    # Escaped: an error quoting "[scope]" or a path with brackets must print as written, not as markup.
    errors.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    sys.exit(EXIT_ERROR)
