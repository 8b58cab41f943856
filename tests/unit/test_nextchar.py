import torch
from opacus.validators import ModuleValidator

from federated.data import ChatMessage
from federated.tasks import get_task
from federated.tasks.nextchar import BOS, IGNORE, PAD


def test_encoding_is_one_sample_per_message_shifted_by_one_byte() -> None:
    task = get_task("nextchar", seq_len=8)
    data = task.encode_texts(["hé", "a much longer message", ""])
    inputs, targets = data.tensors
    assert inputs.shape == targets.shape == (3, 8)
    assert inputs[0, :3].tolist() == [BOS, ord("h"), 0xC3] and inputs[0, 3] == PAD
    assert targets[0, :3].tolist() == list("hé".encode()) and targets[0, 3] == IGNORE
    assert targets[1].tolist() == list(b"a much l")  # truncated to seq_len: still one sample
    assert (targets[2] == IGNORE).all()


def test_loss_is_mean_of_per_message_losses() -> None:
    task = get_task("nextchar", seq_len=16)
    inputs, targets = task.encode_texts(["short", "a somewhat longer one"]).tensors
    model = task.build_model(seed=0)
    logits = model(inputs)
    separate = [task.loss(logits[i:i + 1], targets[i:i + 1]) for i in range(2)]
    assert torch.allclose(task.loss(logits, targets), (separate[0] + separate[1]) / 2)


def test_model_is_causal_seeded_and_opacus_compatible() -> None:
    task = get_task("nextchar", seq_len=16)
    model = task.build_model(seed=1)
    assert ModuleValidator.validate(model, strict=False) == []
    for a, b in zip(model.state_dict().values(), task.build_model(seed=1).state_dict().values()):
        assert torch.equal(a, b)
    model.eval()
    x = task.encode_texts(["abcdefghij"]).tensors[0]
    y = x.clone()
    y[0, 6:] = ord("z")
    with torch.no_grad():
        assert torch.allclose(model(x)[0, :6], model(y)[0, :6], atol=1e-6)
        assert not torch.allclose(model(x)[0, 6:], model(y)[0, 6:])


def test_evaluate_reports_accuracy_in_unit_interval() -> None:
    task = get_task("nextchar", seq_len=16)
    metrics = task.evaluate(task.build_model(seed=0), task.encode_texts(["hello there", "general kenobi"]))
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0


def test_messages_encode_by_their_text_alone() -> None:
    task = get_task("nextchar", seq_len=16)
    plain = ChatMessage("1.000001", "U1", "general", "hello there")
    reply = ChatMessage("2.000001", "U2", "random", "general kenobi", thread_ts="1.000001")
    pairs = ((task.encode([plain, reply]), task.encode_texts([plain.text, reply.text])),
             (task.encode_groups([[plain, reply]], 2), task.encode_text_groups([[plain.text, reply.text]], 2)))
    for got, expected in pairs:
        assert all(torch.equal(a, b) for a, b in zip(got.tensors, expected.tensors))
