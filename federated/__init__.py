"""Optin's library: workspace data, tasks, privacy accounting and the in-process grid.

Nothing here imports ``clients``, ``server`` or ``experiments``; dependencies point one way.
"""
