"""Pluggable learning tasks: data encoding, model and metrics behind one protocol."""

from federated.tasks.base import Task, TextScorer, get_task
from federated.tasks.nextchar import NextCharTask
from federated.tasks.reply import ReplyTask

__all__ = ["Task", "TextScorer", "get_task", "NextCharTask", "ReplyTask"]
