"""The saved model (``federated.tasks.model_file``), completion and the n-gram baselines, on a freshly built model."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from experiments.cli.app import app
from federated.config import RunConfig
from federated.errors import ConfigError
from federated.tasks import NextCharTask
from federated.tasks.completion import complete, render
from federated.tasks.model_file import CARD_FILE, WEIGHTS_FILE, load_model, privacy_claims, save_model

CONFIG = RunConfig(seq_len=32, seed=4)


def _save(folder: Path, task: NextCharTask | None = None, state: dict[str, torch.Tensor] | None = None) -> Path:
    task = task or NextCharTask(seq_len=CONFIG.seq_len)
    state = state if state is not None else task.build_model(CONFIG.seed).state_dict()
    return save_model(folder, task, state, run_id="7", config=CONFIG, rounds={"configured": 3, "updated": [1, 2, 3]},
                      privacy=privacy_claims(CONFIG, None, 0))


def _rewrite_weights(folder: Path, data: bytes) -> None:
    """Replace the weights and update the card's hash, so only the check under test can catch it."""
    (folder / WEIGHTS_FILE).write_bytes(data)
    card = json.loads((folder / CARD_FILE).read_text())
    card["weights_sha256"] = hashlib.sha256(data).hexdigest()
    (folder / CARD_FILE).write_text(json.dumps(card))


def test_saved_model_reloads_with_the_same_weights_and_outputs(tmp_path: Path) -> None:
    task = NextCharTask(seq_len=CONFIG.seq_len)
    model = task.build_model(CONFIG.seed)
    _save(tmp_path, task, model.state_dict())
    for path in (tmp_path, tmp_path / CARD_FILE, tmp_path / WEIGHTS_FILE):
        loaded = load_model(path)
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[name], tensor), name
    data = task.encode_texts(["hello there", "a second message"])
    assert task.evaluate(loaded.model, data) == task.evaluate(model, data)
    card = loaded.card
    assert (card["task"], card["seq_len"], card["run_id"]) == ("nextchar", 32, "7")
    assert card["model_shape"] == {"d_model": 64, "n_layers": 2, "n_heads": 4}
    assert card["run_config"] == CONFIG.to_mapping() and card["rounds"]["configured"] == 3
    assert "ledger" in card["privacy"]["local"]["epsilon"] and "central" not in card["privacy"]


def test_privacy_claims_state_central_epsilon_only_with_central_dp() -> None:
    central = RunConfig(dp_mode="central", noise_multiplier=0.0, central_delta=1e-4)
    claims = privacy_claims(central, 1.25, 2)
    assert claims["central"]["epsilon"] == 1.25 and claims["central"]["delta"] == 1e-4
    assert "local" not in claims and claims["not_private_updates"] == 2
    assert "no privacy claim" in privacy_claims(RunConfig(dp_mode="none", noise_multiplier=0.0), None, 0)["none"]


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path}: no model.json"):
        load_model(tmp_path)
    _save(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(ConfigError, match=f"{tmp_path / WEIGHTS_FILE}: weights file named by .* not found"):
        load_model(tmp_path)


def test_a_corrupted_weights_file_is_refused_by_its_hash(tmp_path: Path) -> None:
    _save(tmp_path)
    data = bytearray((tmp_path / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="SHA-256 differs from weights_sha256"):
        load_model(tmp_path)


def test_a_pickle_is_never_unpickled(tmp_path: Path) -> None:
    _save(tmp_path)

    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "unpickled",))

    _rewrite_weights(tmp_path, pickle.dumps(Boom()))
    with pytest.raises(ConfigError, match=f"{tmp_path / WEIGHTS_FILE}: not a safetensors file"):
        load_model(tmp_path)
    assert not (tmp_path / "unpickled").exists()


def test_weights_of_another_shape_are_refused_naming_the_tensor(tmp_path: Path) -> None:
    _save(tmp_path, NextCharTask(seq_len=CONFIG.seq_len), NextCharTask(seq_len=16).build_model(0).state_dict())
    with pytest.raises(ConfigError, match=r"tensor 'pos.weight' is torch.float32 \[16, 64\]; .* \[32, 64\]"):
        load_model(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"task": "sentiment"}, "unknown task 'sentiment'"),
    ({"format": "other/2"}, "format is 'other/2'; expected 'optin-model/1'"),
    ({"seq_len": "64"}, "field 'seq_len' expected int"),
    ({"weights": "../elsewhere.safetensors"}, "field 'weights' expected a file name beside the card"),
    ({"model_shape": {"d_model": 8, "n_layers": 1, "n_heads": 1}}, "model_shape .* is not the shape"),
], ids=["unknown task", "format", "seq_len type", "weights path", "model shape"])
def test_a_bad_card_is_refused_naming_the_file_and_field(tmp_path: Path, change: dict, message: str) -> None:
    card_path = _save(tmp_path)
    card = json.loads(card_path.read_text())
    card.update(change)
    card_path.write_text(json.dumps(card))
    with pytest.raises(ConfigError, match=f"{card_path}: .*{message}"):
        load_model(tmp_path)


def test_a_card_that_is_not_json_is_refused(tmp_path: Path) -> None:
    _save(tmp_path)
    (tmp_path / CARD_FILE).write_bytes(b"\x80not json")
    with pytest.raises(ConfigError, match=f"{tmp_path / CARD_FILE}: not a JSON model card"):
        load_model(tmp_path)


def test_completions_have_the_requested_count_and_byte_length() -> None:
    task = NextCharTask(seq_len=CONFIG.seq_len)
    model = task.build_model(1)

    def sample() -> list[bytes]:
        return complete(task, model, "héllo ", 10, temperature=1.0, samples=4,
                        generator=torch.Generator().manual_seed(3))

    sampled = sample()
    assert len(sampled) == 4 and all(len(c) == 10 for c in sampled)
    assert sample() == sampled and len(set(sampled)) > 1
    greedy = complete(task, model, "héllo ", 25, samples=2)
    assert greedy[0] == greedy[1] and len(greedy[0]) == CONFIG.seq_len - len("héllo ".encode())
    with pytest.raises(ConfigError, match="expected length <= 25, got 26"):
        complete(task, model, "héllo ", 26)


def test_render_replaces_invalid_utf8_and_keeps_one_line() -> None:
    assert render("ab", b"\xc3\n\xc3\xa9\x00") == "ab\ufffd\\né\\x00"


def test_optin_complete_prints_the_requested_completions(tmp_path: Path) -> None:
    _save(tmp_path)
    result = CliRunner().invoke(app, ["complete", str(tmp_path), "--prefix", "see you", "--length", "12",
                                      "--temperature", "0.9", "--samples", "3", "--seed", "5"])
    assert result.exit_code == 0, result.output
    lines = result.output.rstrip("\n").split("\n")
    assert len(lines) == 3 and all(line.startswith("see you") for line in lines), lines
    loaded = load_model(tmp_path)
    expected = complete(loaded.task, loaded.model, "see you", 12, temperature=0.9, samples=3,
                        generator=torch.Generator().manual_seed(5))
    assert lines == [render("see you", c) for c in expected]


def test_optin_complete_reports_a_bad_model_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["complete", str(tmp_path), "--prefix", "x"])
    assert result.exit_code == 1 and "no model.json" in result.output and "Traceback" not in result.output
