"""The README's reading example runs as written (issue #18), on a tiny-model stand-in of the
demo store holding a prompt of the demo set."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from lens_cache import export

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DEMO_PROMPTS = REPO / "data" / "prompts.jsonl"  # what `make demo` exports


def _python_block(after: str) -> str:
    text = README.read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", text[text.index(after) :], re.S).group(1)


def test_readme_reading_example_runs_on_a_demo_prompt(gpt2_model, tmp_path, monkeypatch):
    code = _python_block("## Reading it back")
    asked = re.findall(r'store\.patterns\(model, "([^"]+)"', code)
    assert asked and asked[0] in DEMO_PROMPTS.read_text(encoding="utf-8")  # the demo has it
    export(gpt2_model, [asked[0]], tmp_path / "lens_cache_data", quiet=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LENS_CACHE_DIR", raising=False)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["p"].shape[:2] == (2, 1) and scope["r"].shape[0] == 2
    assert scope["store"].exists(scope["model"], asked[0])


def test_readme_documents_remote_viewing():
    text = README.read_text(encoding="utf-8")
    assert "ssh -L 8000:localhost:8000 user@remote-host" in text
    assert "lens_cache.serve -s STORE --port 8000" in text


def test_dir_lists_the_public_api():
    import lens_cache

    listed = dir(lens_cache)
    for name in ("open", "export", "push_to_hub", "load_pooled", "ActivationsMissingError"):
        assert name in listed


def test_readme_prediction_and_hook_examples_run(gpt2_model, tmp_path, monkeypatch):
    """The predictions and any-hook blocks, after the reading block, on a tiny export of what
    their comments say they assume, with the prompt they name (one of the demo set)."""
    titles = ("## Reading it back", "### What the model predicts", "### Any hook point")
    blocks = [_python_block(title) for title in titles]
    texts = set(re.findall(r'text = "([^"]+)"', blocks[1] + blocks[2]))
    assert len(texts) == 1 and f'"text": "{min(texts)}"' in DEMO_PROMPTS.read_text()
    hooks = ["pattern", "resid_post", "logits", "logit_lens", "attn.hook_z"]
    export(gpt2_model, [min(texts)], tmp_path / "lens_cache_data", hooks=hooks, quiet=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LENS_CACHE_DIR", raising=False)
    scope: dict = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), scope)
    assert scope["lens"]["loss"].shape[0] == 2 and scope["pred"]["top_ids"].ndim == 2


def test_readme_quotes_the_real_argument_error(cli_env):
    done = subprocess.run(
        [sys.executable, "-m", "lens_cache.activations", "--hooks", "patern"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and line.startswith("error: argument --hooks"), done.stderr
    assert line in " ".join(README.read_text(encoding="utf-8").split())  # wrapped there
