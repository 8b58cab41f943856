"""Runners and the ``optin`` CLI: the demo, experiments and benchmarks."""
