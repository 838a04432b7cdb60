"""The README's and the docs' examples run as written (issue #18), on a tiny-model stand-in of
the demo store holding a prompt of the demo set; the README stays a short front door."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lens_cache import export

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PAGES = (README, *sorted((REPO / "docs").glob("*.md")))  # where an example's heading may be
DEMO_PROMPTS = REPO / "data" / "prompts.jsonl"  # what `make demo` exports
READ_TITLES = ("3. Read it in Python", "Reading it back")  # README's, then docs/reading.md's
# A README that narrates its own history instead of describing the product
HISTORY = ("this round", "previous round", "this branch", "this morning", "last round")


def _python_block(title: str) -> str:
    """The first python block under the heading `title` (any level), in README or docs."""
    heading = re.compile(rf"^#+ {re.escape(title)}", re.M)
    found = [m for page in PAGES if (m := heading.search(page.read_text(encoding="utf-8")))]
    assert len(found) == 1, f"{title!r} is the heading of {len(found)} sections"
    text = found[0].string[found[0].start() :]
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


@pytest.mark.parametrize("title", READ_TITLES)
def test_readme_reading_example_runs_on_a_demo_prompt(title, gpt2_model, tmp_path, monkeypatch):
    code = _python_block(title)
    asked = re.findall(r'store\.patterns\(model, "([^"]+)"', code)
    assert asked and asked[0] in DEMO_PROMPTS.read_text(encoding="utf-8")  # the demo has it
    export(gpt2_model, [asked[0]], tmp_path / "lens_cache_data", quiet=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LENS_CACHE_DIR", raising=False)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["p"].shape[:2] == (2, 1) and scope["r"].shape[0] == 2
    assert scope["store"].exists(scope["model"], asked[0])


def test_readme_notebook_example_runs_after_the_reading_one(gpt2_model, tmp_path, monkeypatch):
    reading, notebook = _python_block(READ_TITLES[0]), _python_block("4. Show it in a notebook")
    asked = re.findall(r'store\.patterns\(model, "([^"]+)"', reading)[0]
    export(gpt2_model, [asked], tmp_path / "lens_cache_data", quiet=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LENS_CACHE_DIR", raising=False)
    scope: dict = {}
    for code in (reading, notebook):
        exec(compile(code, "README.md", "exec"), scope)
    page = scope["view"]._repr_html_()
    assert "<iframe" in page and "srcdoc" in page  # the inline viewer, not an error message


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_page_narrates_its_own_history(page):
    """Measurements carry dates and commits; history goes to CHANGELOG.md."""
    text = " ".join(page.read_text(encoding="utf-8").lower().split())  # phrases wrap
    assert [phrase for phrase in HISTORY if phrase in text] == []


def test_readme_is_a_front_door():
    """Short, and honest about what `make demo` costs."""
    text = README.read_text(encoding="utf-8")
    assert len(text.encode()) < 12_500
    assert re.search(r"make demo .*\n(?:\s+#.*\n)*?\s+#.*about \d+ minutes", text)


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
    titles = (READ_TITLES[1], "What the model predicts", "Any hook point")
    blocks = [_python_block(title) for title in titles]
    texts = set(re.findall(r'text = "([^"]+)"', blocks[1] + blocks[2]))
    assert len(texts) == 1 and f'"text": "{min(texts)}"' in DEMO_PROMPTS.read_text()
    hooks = ["pattern", "resid_post", "logits", "logit_lens", "attn.hook_z"]
    export(gpt2_model, [min(texts)], tmp_path / "lens_cache_data", hooks=hooks, quiet=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LENS_CACHE_DIR", raising=False)
    scope: dict = {}
    for code in blocks:
        exec(compile(code, "docs/reading.md", "exec"), scope)
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
    docs = " ".join(page.read_text(encoding="utf-8") for page in PAGES)
    assert line in " ".join(docs.split())  # wrapped there
