"""The reply task: labels from each message's own thread fields, member groups as one sample, metrics against
the majority baseline, and a model that learns what distinguishes replies in the synthetic workspaces."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from clients.dp_training import DPSGDSettings, grad_sample_mode, repeatable_generator, train_dp_sgd
from clients.workspace_node import member_groups
from experiments.research.sweep_config import parse_audit
from federated.config import RunConfig
from federated.data import ChatMessage, SyntheticSpec
from federated.data.synthetic import generate_workspace
from federated.errors import ConfigError
from federated.tasks import ReplyTask, TextScorer, get_task
from federated.tasks.reply import IGNORE, PAD, classification_metrics

PLAIN = ChatMessage("1700000000.000100", "U1", "general", "hello all")
PARENT = ChatMessage("1700000001.000100", "U1", "general", "who has the keys?", thread_ts="1700000001.000100")
REPLY = ChatMessage("1700000002.000100", "U2", "general", "i do", thread_ts="1700000001.000100")


def _samples(task: ReplyTask, messages: list[ChatMessage]) -> Counter[bytes]:
    inputs, targets = task.encode(messages).tensors
    return Counter(inputs[i].numpy().tobytes() + targets[i].numpy().tobytes() for i in range(len(messages)))


def test_labels_come_from_slack_thread_fields_plain_and_parent_are_top_level() -> None:
    task = get_task("reply", seq_len=8)
    inputs, targets = task.encode([PLAIN, PARENT, REPLY]).tensors
    assert inputs.shape == (3, 1, 8) and targets.tolist() == [[0], [0], [1]]
    assert inputs[0, 0].tolist() == list(b"hello al")  # the first seq_len bytes of the text
    assert inputs[2, 0].tolist() == list(b"i do") + [PAD] * 4


def test_removing_one_message_removes_exactly_its_own_sample_even_a_thread_parent() -> None:
    task = ReplyTask(seq_len=16)
    full = [PLAIN, PARENT, REPLY]
    for i in range(len(full)):
        rest = full[:i] + full[i + 1:]
        assert _samples(task, full) - _samples(task, rest) == _samples(task, [full[i]])
        assert not _samples(task, rest) - _samples(task, full)  # a reply stays a reply without its parent


def test_member_level_encoding_makes_one_sample_per_member_with_its_labels() -> None:
    task = ReplyTask(seq_len=16)
    messages = [PLAIN, PARENT, REPLY, ChatMessage("1700000003.000100", "U2", "random", "lunch?")]
    groups = member_groups(messages, 3, bytes(32))
    inputs, targets = task.encode_groups(groups, per_group=3).tensors
    assert inputs.shape == (2, 3, 16) and targets.shape == (2, 3)  # U1 and U2
    assert sorted(targets[0].tolist()) == [IGNORE, 0, 0]  # U1: plain and parent, one empty slot
    assert sorted(targets[1].tolist()) == [IGNORE, 0, 1]  # U2: a reply and a top-level message
    with pytest.raises(ValueError, match="more than per_group"):
        task.encode_groups([messages], per_group=3)


def test_a_group_loss_is_the_mean_over_its_messages_so_one_member_is_one_sample() -> None:
    task = ReplyTask(seq_len=16)
    model = task.build_model(0)
    grouped = task.encode_groups([[PLAIN, REPLY]], per_group=2).tensors
    single = task.encode([PLAIN, REPLY]).tensors
    assert task.loss(model(grouped[0]), grouped[1]).item() == pytest.approx(
        task.loss(model(single[0]), single[1]).item(), rel=1e-6)


def test_metrics_report_balanced_accuracy_f1_and_the_majority_baseline() -> None:
    truth = torch.tensor([0, 0, 0, 1])
    always_top = classification_metrics(truth, torch.zeros(4, dtype=torch.long))
    assert always_top == {"accuracy": 0.75, "balanced_accuracy": 0.5, "reply_f1": 0.0, "majority_accuracy": 0.75}
    perfect = classification_metrics(truth, truth)
    assert perfect["balanced_accuracy"] == perfect["reply_f1"] == perfect["accuracy"] == 1.0
    task = ReplyTask(seq_len=16)
    metrics = task.evaluate(task.build_model(0), task.encode([PLAIN, PARENT, REPLY]))
    assert set(metrics) == {"loss", "accuracy", "balanced_accuracy", "reply_f1", "majority_accuracy"}
    assert metrics["majority_accuracy"] == pytest.approx(2 / 3) and metrics["loss"] > 0


def test_the_model_runs_on_the_nodes_fast_per_sample_gradient_path_and_is_seeded() -> None:
    task = ReplyTask()
    assert grad_sample_mode(task.build_model(0)) == "ew"
    a, b = task.build_model(1).state_dict(), task.build_model(1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    empty = task.encode([ChatMessage("1.0", "U1", "general", "")]).tensors[0]
    assert torch.isfinite(task.build_model(0)(empty)).all()  # no byte to pool over


def test_dp_sgd_beats_the_majority_baseline_on_synthetic_threads() -> None:
    task = ReplyTask()
    messages = list(generate_workspace(0, SyntheticSpec(num_workspaces=1, seed=0, min_messages=600,
                                                        max_messages=600)).messages)
    train, held_out = task.encode(messages[:450]), task.encode(messages[450:])
    assert 0 < int(train.tensors[1].sum()) < len(train) // 2  # replies are a real, minority class
    model = task.build_model(0)
    settings = DPSGDSettings(noise_multiplier=0.5, max_grad_norm=1.0, sample_rate=0.1, expected_batch_size=45,
                             local_steps=100, lr=0.1)
    outcome = train_dp_sgd(task, model, train, settings, repeatable_generator(0))
    model.load_state_dict(outcome.state_dict)
    metrics = task.evaluate(model, held_out)
    assert metrics["accuracy"] > metrics["majority_accuracy"] + 0.05
    assert metrics["balanced_accuracy"] > 0.7


def test_only_language_model_tasks_score_texts_and_audits_refuse_the_others() -> None:
    assert isinstance(get_task("nextchar"), TextScorer) and not isinstance(get_task("reply"), TextScorer)
    with pytest.raises(ConfigError, match="run.task.*scores texts"):
        parse_audit(Path("sweep.toml"), {}, RunConfig(task="reply"))
    with pytest.raises(ConfigError, match="unknown task 'threads'"):
        get_task("threads")
