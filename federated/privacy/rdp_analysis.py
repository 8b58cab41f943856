"""Opacus' RDP analysis (``opacus/accountants/analysis/rdp.py``), loaded without importing torch.

Guarantee: :data:`rdp` is Opacus' own module, the same file executed unchanged, so ``compute_rdp`` and
``get_privacy_spent`` give exactly Opacus' values; :data:`ORDERS` equals ``RDPAccountant.DEFAULT_ALPHAS``
(a test checks both against the installed Opacus). Why a file load and not an import: importing any
``opacus`` submodule first runs ``opacus/__init__``, which imports torch (its optimizers), and that takes
seconds; the ledger and the operator commands (``optin ledger show``, the node's budget check) need only
this NumPy/SciPy file. Assumption: the installed Opacus keeps the analysis in that file with only NumPy and
SciPy imports (true for the pinned 1.6; the test fails first if it changes). The module is registered under
a private name, so Opacus' own copy, once torch is loaded, is untouched.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from federated.errors import PrivacyError

_NAME = "federated.privacy._opacus_rdp"

ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
"""The RDP orders of Opacus' ``RDPAccountant.DEFAULT_ALPHAS``."""


def _load() -> ModuleType:
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    package = importlib.util.find_spec("opacus")  # finds the folder; runs nothing
    if package is None or not package.submodule_search_locations:
        raise PrivacyError("opacus is not installed: the RDP accountant needs it (pip install opacus)")
    path = Path(package.submodule_search_locations[0]) / "accountants" / "analysis" / "rdp.py"
    spec = importlib.util.spec_from_file_location(_NAME, path)
    if spec is None or spec.loader is None:
        raise PrivacyError(f"{path}: Opacus' RDP analysis was not found where Opacus 1.6 keeps it")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[_NAME] = module
    return module


rdp = _load()
