"""Pluggable learning tasks: data encoding, model and metrics behind one protocol."""

from federated.tasks.base import Task, get_task
from federated.tasks.nextchar import NextCharTask

__all__ = ["Task", "get_task", "NextCharTask"]
