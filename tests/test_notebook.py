"""The viewer inline in notebooks: `lens_cache.show` and `show_patterns`.

Displays are checked as a notebook shows them (`_repr_html_` in a page) in Debian's Chromium
from file://, with every request off the machine refused; hover values against the stored npz
and against TransformerLens's own live patterns.
"""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import lens_cache
from lens_cache.errors import InvalidOptionError
from lens_cache.synthetic import GRID_MODEL, write_store
from tests.helpers import REPO, npz_layer
from tests.inline import OfflinePage, check_two_head_views, hover_cell, open_views

GRID = GRID_MODEL.name
MB3 = 3 * 10**6


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A store of a 12-layer x 12-head model with one 256-token prompt (and the special ones:
    the XSS prompt among them)."""
    info = write_store(
        tmp_path_factory.mktemp("grid"), models=[GRID_MODEL], n_prompts=1, lengths=(256, 256)
    )
    records = lens_cache.open(info["save_path"]).prompts(GRID)
    info["long"] = next(r["hash"] for r in records if r["n_tokens"] == 256)
    return info


def _attributes(page: str) -> list[str]:
    return re.findall(r'\b(?:src|href)="([^"]*)"', page)


def test_a_256_token_prompt_of_12x12_heads_displays_in_under_3_mb(grid):
    save, h = grid["save_path"], grid["long"]
    for view, layer in (("prompt", None), ("head", 5), ("metrics", None)):
        view_obj = lens_cache.show(save, GRID, h, layer=layer, head=7, view=view)
        html = view_obj._repr_html_()
        assert len(html.encode()) < MB3, (view, len(html))
        # self-contained: every script, stylesheet and link is inline data or an address
        assert all(a.startswith(("data:", "#")) for a in _attributes(view_obj.page))
        others = [v for k, v in grid["hashes"].items() if v != h]
        assert not any(other in view_obj.page for other in others)  # only this prompt's data


def test_the_core_never_imports_ipython(grid):
    code = (
        "import sys, lens_cache\n"
        f"v = lens_cache.show({str(grid['save_path'])!r}, {GRID!r}, {grid['long']!r})\n"
        "v._repr_html_()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipykernel')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_notebook_extra_is_separate_from_the_core():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    assert not any(name in core for name in ("ipykernel", "ipython", "jupyter", "nbclient"))
    assert [d for d in project["optional-dependencies"]["notebook"] if d.startswith("ipykernel")]


def test_show_refuses_bad_input_in_one_line(grid, gqa_model):
    with pytest.raises(InvalidOptionError, match="view must be one of prompt, head"):
        lens_cache.show(grid["save_path"], GRID, grid["long"], view="grid")
    tokens = gqa_model.model.to_str_tokens("one two three")
    with pytest.raises(InvalidOptionError, match=r"expected \[heads, \d+, \d+\]"):
        lens_cache.show_patterns(tokens[:-1], torch.rand(4, len(tokens), len(tokens)))


@pytest.mark.browser
def test_two_inline_views_on_one_page_draw_hover_and_respond_apart(
    browser, grid, gqa_model, tmp_path
):
    save, h = grid["save_path"], grid["long"]
    text = "The cat sat on the mat, and then the cat sat on the mat again."
    with torch.inference_mode():
        _, cache = gqa_model.model.run_with_cache(gqa_model.model.to_tokens(text))
    tokens = gqa_model.model.to_str_tokens(text)
    stored = lens_cache.show(save, GRID, h, layer=5, head=7, view="head")
    live = lens_cache.show_patterns(tokens, cache, layer=1, head=2, view="head")
    pg = open_views(browser, tmp_path, stored, live)
    try:
        first, second = pg.displays(2)
        assert f"query 9: {json.dumps(tokens[9])}" in hover_cell(pg.page, second, 9, 4)
        check_two_head_views(
            pg,
            (first, npz_layer(save, GRID, h, 5)[7], (20, 3)),
            (second, cache["blocks.1.attn.hook_pattern"][0, 2].numpy(), (9, 4)),
        )
        assert first.evaluate("location.hash").endswith("/5/8")  # ArrowRight: next head
        assert second.evaluate("location.hash").endswith("/2/2")  # ArrowDown: next layer
        pg.check_clean()
    finally:
        pg.close()


@pytest.mark.browser
def test_the_xss_prompt_stays_text_inline(browser, grid, tmp_path):
    view = lens_cache.show(grid["save_path"], GRID, grid["xss_hash"], view="prompt")
    pg = open_views(browser, tmp_path, view)
    try:
        (frame,) = pg.displays(1)
        frame.wait_for_selector(".prompt-text, .text, main")
        assert "<img src=x onerror=alert(1)>" in frame.locator("#app").inner_text()
        assert frame.locator("img").count() == 0
        pg.check_clean()
    finally:
        pg.close()


def test_show_patterns_takes_a_layers_heads_tensor():
    tokens = ["a", "b", "c"]
    pat = np.tril(np.ones((2, 3, 3, 3), np.float32))
    pat /= pat.sum(-1, keepdims=True)
    page = lens_cache.show_patterns(tokens, pat, view="head", layer=1).page
    assert "%23/head/patterns/" in page  # the address it opens on, inside its boot script
    assert "/L0.js" in page and "/L1.js" in page  # both layers: small data goes whole


EXAMPLE = REPO / "examples" / "lens_cache_example.ipynb"
# nbconvert's page without the scripts it takes from CDNs (RequireJS, MathJax, Mermaid): this
# page must load offline, and nothing in the notebook needs them.
OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _execute_example(tmp_path, model_dir, monkeypatch):
    """The example notebook run by a real Jupyter kernel (nbclient), with the tiny model."""
    import nbformat
    from nbclient import NotebookClient

    store = tmp_path / "store"
    monkeypatch.setenv("LENS_CACHE_EXAMPLE_MODEL", str(model_dir))
    monkeypatch.setenv("LENS_CACHE_EXAMPLE_STORE", str(store))
    notebook = nbformat.read(EXAMPLE, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3").execute(cwd=str(tmp_path))
    return notebook, store


def _to_html(notebook, tmp_path):
    from nbconvert import HTMLExporter

    template = tmp_path / "offline.html.j2"
    template.write_text(OFFLINE_TEMPLATE)
    html, _ = HTMLExporter(template_file=str(template)).from_notebook_node(notebook)
    path = tmp_path / "example.html"
    path.write_text(html, encoding="utf-8")
    return path


@pytest.mark.browser
def test_example_notebook_runs_and_its_views_work_offline(browser, gqa_dir, tmp_path, monkeypatch):
    notebook, store = _execute_example(tmp_path, gqa_dir, monkeypatch)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert re.search(r"leave-one-out accuracy: [01]\.\d\d over 8 prompts", printed)
    model = gqa_dir.name
    h = lens_cache.prompt_hash("def add(a, b):\n    return a + b")
    reader = lens_cache.open(store)
    stored = reader.activation_cache(model, h)
    pg = OfflinePage(browser, _to_html(notebook, tmp_path))
    try:
        first, second = pg.displays(2)
        first.wait_for_selector(".pane[data-draw-ms]")  # the inline head view is drawn
        check_two_head_views(
            pg,
            (first, npz_layer(store, model, h, 1)[2], (5, 2)),
            (second, stored["blocks.0.attn.hook_pattern"][0, 1].numpy(), (6, 3)),
        )
        pg.check_clean()
    finally:
        pg.close()


@pytest.mark.browser
def test_the_logit_lens_view_inline_shows_the_stored_loss(browser, gqa_model, tmp_path):
    text = "The cat sat on the mat, and then the cat sat on the mat again."
    hooks = ["pattern", "logit_lens"]
    lens_cache.export(gqa_model, [text], tmp_path / "s", hooks=hooks, quiet=True, index_html=False)
    store = lens_cache.open(tmp_path / "s")
    loss = store.logit_lens(gqa_model.name, text)["loss"]  # [layers, T]
    view = lens_cache.show(store, gqa_model.name, text, view="lens")
    pg = open_views(browser, tmp_path, view)
    try:
        (frame,) = pg.displays(1)
        frame.wait_for_selector(".lens-scroller[data-drawn]")
        scroller = frame.locator(".lens-scroller")
        d = {
            k: float(v)
            for k, v in scroller.evaluate("e => ({...e.dataset})").items()
            if k != "drawn"
        }
        box = scroller.bounding_box()
        for layer, i in ((1, 3), (2, 7)):
            x = box["x"] + d["labelW"] + (i + 0.5) * d["cellW"]
            y = box["y"] + d["headH"] + (layer + 0.5) * d["cellH"]
            pg.page.mouse.move(x, y)
            cell = f"layer {layer}, position {i}:"
            frame.wait_for_function(
                f"document.getElementById('tip').textContent.startsWith('{cell}')"
            )
            assert f"loss {loss[layer, i]:.4f}" in frame.locator("#tip").text_content()
        pg.check_clean()
    finally:
        pg.close()
