"""The static viewer: files write_viewer makes, and the page itself in a real browser.

Browser tests drive Debian's chromium through Playwright from file://, as a user opens the
page, with the network unused. Screenshots of each view go to $LENS_CACHE_ARTIFACTS (or a
temporary folder).
"""

import base64
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest

from lens_cache.synthetic import SMALL_MODEL, XSS_TEXT, ModelSpec, write_store
from lens_cache.viewer import (
    APP_DIR,
    ASSETS,
    DATA_DIR,
    OLD_ASSETS,
    SCRIPTS,
    assets_dir,
    model_slug,
    write_viewer,
)
from lens_cache.viewer._encode import THUMB_SIZE, float16_bits, float16_bits_numpy, thumbnail
from tests.browser import (
    HEAT_CENTRE_JS,
    HEAT_RESIZE_JS,
    LENS_POINT,
    TOKEN_POINT,
    Page,
    check_heat_pointer,
    check_hover,
    check_lens_tip,
    check_token_tip,
    chromium_point,
    hover_cell,
    shown_value,
    value_line,
    wait_head,
)
from tests.helpers import npz_layer, quiet, read_jsonl, read_safetensors

SMALL, GRID = "toy-3x2", "toy-12x12"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    info = write_store(tmp_path_factory.mktemp("store"))
    info["report"] = write_viewer(info["save_path"], log=quiet)
    return info


def read_call(path: Path):
    """(function name, args) of a data script ``LENS.f(<json>, <json>);``."""
    m = re.fullmatch(r"LENS\.(\w+)\((.*)\);\n", path.read_text(encoding="utf-8"), re.S)
    assert m, f"{path} is not one LENS call"
    return m.group(1), json.loads("[" + m.group(2) + "]")


def decode(desc: dict) -> np.ndarray:
    dtype = {"f2": "<f2", "f4": "<f4", "u1": "u1"}[desc["dtype"]]
    raw = zlib.decompress(base64.b64decode(desc["b64"]))
    return np.frombuffer(raw, dtype=dtype).reshape(desc["shape"])


def prompt_dir(save: Path, model: str, h: str) -> Path:
    return save / DATA_DIR / model_slug(model) / h


# ---------------------------------------------------------------- files


def test_report_and_files(store):
    save, report = store["save_path"], store["report"]
    assert report["models"] == 2 and report["prompts"] == 10 and report["built"] == 10
    for name in ("index.html", *(f"{APP_DIR}/{a}" for a in ASSETS), f"{DATA_DIR}/lens_index.js"):
        assert (save / name).is_file(), name
    assert not any((save / name).exists() for name in OLD_ASSETS)
    assert report["bytes_written"] == report["viewer_bytes"]
    assert 0 < report["viewer_bytes"] < report["npz_bytes"]
    assert not list(save.rglob("*.tmp*")), "a temporary file was left behind"


def test_layer_chunk_round_trips_within_float16(store):
    save, h = store["save_path"], store["hashes"]["long-01"]
    func, (key, chunk) = read_call(prompt_dir(save, SMALL, h) / "L2.js")
    assert func == "chunk" and key == f"{SMALL}/{h}/2"
    pat = npz_layer(save, SMALL, h, 2)
    t = pat.shape[-1]
    assert (chunk["n_heads"], chunk["n_tokens"], chunk["layout"]) == (2, t, "tril")
    tril = decode(chunk["data"]).astype(np.float32)
    rows, cols = np.tril_indices(t)
    np.testing.assert_allclose(tril, pat[:, rows, cols], atol=2.5e-4)


@pytest.mark.parametrize("n_tokens", [5, 48, 49, 97, 200])
def test_thumbnail_is_the_max_of_each_block(n_tokens):
    # brute force: block (i, j) covers rows/columns [i*T//S, (i+1)*T//S), its max scaled to
    # 0..255; the thumbnail keeps the pooled lower triangle row by row
    rng = np.random.default_rng(n_tokens)
    patterns = np.tril(rng.random((3, n_tokens, n_tokens), dtype=np.float32))
    size = min(n_tokens, THUMB_SIZE)
    edges = [i * n_tokens // size for i in range(size + 1)]
    expected = [
        [
            round(float(patterns[h, edges[i] : edges[i + 1], edges[j] : edges[j + 1]].max()) * 255)
            for i in range(size)
            for j in range(i + 1)
        ]
        for h in range(3)
    ]
    np.testing.assert_array_equal(thumbnail(patterns), np.array(expected, dtype=np.uint8))


@pytest.mark.parametrize("convert", [float16_bits, float16_bits_numpy], ids=["torch", "numpy"])
def test_float16_bits_are_numpys_rounding_everywhere(convert):
    # every float16 value and the float32s around each of its rounding midpoints (ties to
    # even, both sides), subnormals, overflow to inf, both signs; numpy's astype is the
    # reference (its slow path for tiny values is what float16_bits replaces). An export
    # converts with torch (loaded there), a viewer build from disk with numpy: same bits.
    import torch  # noqa: F401  (loaded, as in an export: float16_bits converts with it)

    halves = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    exact = halves[np.isfinite(halves)].astype(np.float32).view(np.uint32).astype(np.int64)
    near = np.concatenate([exact + d for d in (-4097, -4096, -4095, -1, 0, 1, 4095, 4096)])
    near = near[(near >= 0) & (near < 2**32)].astype(np.uint32).view(np.float32)
    values = np.concatenate([near, np.float32([65519.0, 65520.0, 1e30, -1e-30, np.inf])])
    values = values[~np.isnan(values)]
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(convert(values), expected)
    assert np.isnan(convert(np.float32([np.nan, -np.nan])).view(np.float16)).all()


def test_partial_layers_write_only_stored_layers(store):
    out = prompt_dir(store["save_path"], GRID, store["hashes"]["long-01"])
    assert sorted(p.name for p in out.glob("L*.js")) == ["L0.js", "L11.js", "L5.js"]
    _, (_, payload) = read_call(out / "prompt.js")
    assert payload["layers"] == [0, 5, 11]
    assert decode(payload["thumb"]).shape == (3, 12, 48 * 49 // 2)
    assert payload["thumb_size"] == 48
    short = prompt_dir(store["save_path"], GRID, store["hashes"]["prose-01"])
    assert read_call(short / "prompt.js")[1][1]["thumb"] is None  # drawn from the chunks


def test_data_scripts_escape_markup_and_keep_text(store):
    save, h = store["save_path"], store["xss_hash"]
    for path in (save / DATA_DIR).rglob("*.js"):
        text = path.read_text(encoding="utf-8")
        assert "<" not in text and ">" not in text and "\u2028" not in text, path
    _, (_, payload) = read_call(prompt_dir(save, SMALL, h) / "prompt.js")
    assert payload["text"] == XSS_TEXT
    assert payload["resid"] is None  # the XSS prompt has no residuals.safetensors
    _, (index,) = read_call(save / DATA_DIR / "lens_index.js")
    assert index["texts"][h]["text"] == XSS_TEXT


def test_index_html_holds_no_data(store):
    html = (store["save_path"] / "index.html").read_text()
    assert "onerror" not in html and "lighthouse" not in html
    scripts = re.findall(r'<script src="([^"]*)"></script>', html)
    # in dependency order, the index last
    assert scripts == [*(f"{APP_DIR}/{s}" for s in SCRIPTS), f"{DATA_DIR}/lens_index.js"]
    assert "Content-Security-Policy" in html and "http" not in html.replace("http-equiv", "")


@pytest.mark.parametrize("model", [SMALL, GRID])
def test_residual_norms_match_safetensors(store, model):
    """Against safetensors' own reader (torch has bfloat16, numpy has not), not ours."""
    import torch

    save, h = store["save_path"], store["hashes"]["repeat-01"]
    _, (_, payload) = read_call(prompt_dir(save, model, h) / "prompt.js")
    norms = decode(payload["resid"]["norms"]["resid_post"])
    path = save / model / "prompts" / h / "residuals.safetensors"
    resid = read_safetensors(path)["blocks.1.hook_resid_post"]
    assert resid.dtype == (torch.bfloat16 if model == GRID else torch.float32)
    expected = torch.linalg.vector_norm(resid.double(), dim=-1).numpy()
    np.testing.assert_allclose(norms[1], expected, rtol=1e-5)


def test_model_average_ranks_planted_induction_head_first(store):
    _, (index,) = read_call(store["save_path"] / DATA_DIR / "lens_index.js")
    for model in index["models"]:
        avg = np.array(model["avg"]["induction"], dtype=np.float64)
        layer, head = np.unravel_index(np.nanargmax(avg), avg.shape)
        assert (layer, head) == store["induction_heads"][model["name"]]
        assert "induction" in model["labels"][layer][head]


def test_every_web_script_is_shipped_and_loaded():
    """A script added to web/ must be in SCRIPTS (or the hosted page's), or no page loads it."""
    from lens_cache.viewer.hosted import HOSTED_SCRIPTS

    web = assets_dir()
    found = sorted(p.name for p in web.iterdir() if p.name.endswith(".js"))
    assert found == sorted(SCRIPTS + HOSTED_SCRIPTS)
    assert SCRIPTS[0] == "core.js" and SCRIPTS[-1] == "router.js"


def test_old_single_file_viewer_is_removed(tmp_path):
    info = write_store(tmp_path, models=[SMALL_MODEL])
    for name in OLD_ASSETS:
        (info["save_path"] / name).write_text("/* the viewer before it was split */\n")
    write_viewer(info["save_path"], log=quiet)
    assert not any((info["save_path"] / name).exists() for name in OLD_ASSETS)


def test_incremental_skips_rebuilds_and_prunes(tmp_path):
    info = write_store(tmp_path, models=[SMALL_MODEL])
    save = info["save_path"]
    first = write_viewer(save, log=quiet)
    again = write_viewer(save, log=quiet)
    assert (again["built"], again["skipped"], again["bytes_written"]) == (0, 5, 0)

    npz = save / SMALL / "prompts" / info["hashes"]["prose-01"] / "activations.npz"
    st = npz.stat()
    os.utime(npz, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = write_viewer(save, log=quiet)
    assert (touched["built"], touched["skipped"]) == (1, 4)

    gone = info["hashes"]["prose-02"]
    jsonl = save / SMALL / "prompts.jsonl"
    rows = [r for r in jsonl.read_text().splitlines() if gone not in r]
    jsonl.write_text("\n".join(rows) + "\n")
    pruned = write_viewer(save, log=quiet)
    assert (pruned["prompts"], pruned["pruned"], pruned["built"]) == (4, 1, 0)
    assert not prompt_dir(save, SMALL, gone).exists()
    assert pruned["viewer_bytes"] < first["viewer_bytes"]


def viewer_files(save) -> dict[str, bytes]:
    return {str(p.relative_to(save)): p.read_bytes() for p in sorted(save.rglob("*.js"))}


# A build in worker processes, in a child process of its own: forking needs a process with no
# other thread, and a test session has some (tqdm's monitor, Playwright's runner).
BUILD_IN_PROCESSES = """
import sys
from concurrent.futures import ProcessPoolExecutor
from lens_cache.viewer import _build, write_viewer
_build.PROCESSES_FROM = 1  # a store this small gets processes too
with _build.build_pool(8, None) as pool:  # else the comparison would be vacuous
    assert isinstance(pool, ProcessPoolExecutor), pool
result = write_viewer(sys.argv[1], log=lambda _: None, force=True)
print(result["built"], result["prompts"])
"""


def test_worker_processes_write_what_threads_write_and_skip_damaged_files(tmp_path):
    info = write_store(tmp_path, models=[SMALL_MODEL], n_prompts=3)
    save = info["save_path"]
    write_viewer(save, log=quiet, workers=1)
    threads = viewer_files(save)

    def build() -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-c", BUILD_IN_PROCESSES, str(save)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)

    assert build().stdout.split() == ["8", "8"]
    assert viewer_files(save) == threads

    npz = save / SMALL / "prompts" / info["hashes"]["prose-01"] / "activations.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])  # truncated
    damaged = build()  # the error crosses back from a worker
    assert damaged.stdout.split() == ["8", "7"]
    assert f"skipped a prompt: {npz}" in damaged.stderr


def test_stacked_heads_npy_replaces_the_npz(tmp_path):
    info = write_store(tmp_path, models=[SMALL_MODEL])
    save, h = info["save_path"], info["hashes"]["repeat-01"]
    folder = save / SMALL / "prompts" / h
    expected = npz_layer(save, SMALL, h, 2)
    with np.load(folder / "activations.npz") as z:
        stacked = np.stack([z[f"blocks.{i}.attn.hook_pattern"][0] for i in range(3)])[None]
    np.save(folder / "activations-blocks.-.attn.hook_pattern.npy", stacked)
    (folder / "activations.npz").unlink()
    assert write_viewer(save, log=quiet)["built"] == 5
    _, (_, chunk) = read_call(prompt_dir(save, SMALL, h) / "L2.js")
    rows, cols = np.tril_indices(expected.shape[-1])
    np.testing.assert_allclose(decode(chunk["data"]), expected[:, rows, cols], atol=2.5e-4)


def rewrite_record(save: Path, model: str, record: dict) -> None:
    """Replace one prompt's record in prompt.json and prompts.jsonl, as an export would."""
    (save / model / "prompts" / record["hash"] / "prompt.json").write_text(json.dumps(record))
    jsonl = save / model / "prompts.jsonl"
    rows = read_jsonl(jsonl)
    rows = [record if r["hash"] == record["hash"] else r for r in rows]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_residual_only_prompts_have_no_layers(tmp_path):
    info = write_store(tmp_path, models=[SMALL_MODEL])
    save, h = info["save_path"], info["hashes"]["prose-01"]
    folder = save / SMALL / "prompts" / h
    (folder / "activations.npz").unlink()
    record = json.loads((folder / "prompt.json").read_text())
    record["lens_cache"].update(hooks=["resid_post"], layers=[])
    rewrite_record(save, SMALL, record)
    write_viewer(save, log=quiet)
    _, (_, payload) = read_call(prompt_dir(save, SMALL, h) / "prompt.js")
    assert payload["layers"] == [] and payload["resid"] is not None
    record["lens_cache"]["hooks"] = ["pattern"]  # says patterns are there: a broken store
    rewrite_record(save, SMALL, record)
    with pytest.raises(FileNotFoundError, match="lists patterns as stored"):
        write_viewer(save, log=quiet)


def test_stale_files_are_rebuilt_when_a_data_file_is_missing(tmp_path):
    info = write_store(tmp_path, models=[SMALL_MODEL])
    write_viewer(info["save_path"], log=quiet)
    (prompt_dir(info["save_path"], SMALL, info["hashes"]["prose-01"]) / "L1.js").unlink()
    assert write_viewer(info["save_path"], log=quiet)["built"] == 1


def test_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no models.jsonl"):
        write_viewer(tmp_path, log=quiet)
    info = write_store(tmp_path / "s", models=[SMALL_MODEL])
    npz = info["save_path"] / SMALL / "prompts" / info["hashes"]["prose-01"] / "activations.npz"
    np.savez(npz, **{"blocks.0.attn.hook_pattern": np.zeros((1, 2, 3, 3), np.float32)})
    built = write_viewer(info["save_path"], log=quiet)  # that prompt is skipped, not the build
    assert built["prompts"] == len(info["hashes"]) - 1
    warned = capsys.readouterr().err
    assert (
        f"{npz} is damaged" in warned and "blocks.0.attn.hook_pattern: shape (1, 2, 3, 3)" in warned
    )
    bad = tmp_path / "bad"
    (bad / DATA_DIR).mkdir(parents=True)  # a model folder by hand: the exporter refuses the name
    (bad / DATA_DIR / "model_cfg.json").write_text(json.dumps({"model_name": DATA_DIR}))
    with pytest.raises(ValueError, match="the viewer's own data folder"):
        write_viewer(bad, log=quiet)


def test_model_slug_is_file_safe_and_unique():
    assert model_slug("gpt2-small") == "gpt2-small"
    a, b = model_slug("org/model"), model_slug("org_model")
    assert "/" not in a and a != b
    assert not model_slug("..").startswith(".")


def test_serve_binds_localhost_and_serves_the_page(store):
    from lens_cache.viewer.serve import make_server

    server = make_server(store["save_path"], host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as r:
            assert f'<script src="{APP_DIR}/router.js">'.encode() in r.read()
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- in a browser


@pytest.fixture
def page(browser, store, artifacts):
    p = Page(browser, store, artifacts)
    yield p
    p.page.close()
    p.check_clean()


@pytest.mark.browser
def test_home_lists_prompts(page, store):
    page.open()
    page.page.wait_for_selector(".vrow")
    assert page.page.locator(".toolbar .note").first.text_content() == "10 of 10 prompts"
    rows = page.page.locator(".vrow:not([hidden])").all_text_contents()
    assert len(rows) == 10 and any("repeat-01" in r for r in rows)
    page.shot("home")
    page.page.fill("input[type=search]", "heat rises")
    assert page.page.locator(".vrow:not([hidden])").count() == 2  # prose-02 under both models
    page.page.select_option("select[title='filter by metadata']", "kind=induction")
    page.page.fill("input[type=search]", "")
    assert page.page.locator(".vrow:not([hidden])").count() == 2
    assert "meta=kind%3Dinduction" in page.page.evaluate("location.hash")


@pytest.mark.browser
def test_home_sorts_by_length(page):
    page.open("#/?sort=n&dir=desc")
    page.page.wait_for_selector(".vrow")
    first = page.page.locator(".vrow[data-idx='0']").text_content()
    assert "long-01" in first and "300" in first


@pytest.mark.browser
def test_hash_navigation_reaches_head_and_hover_matches_npz(page, store):
    save, h = store["save_path"], store["hashes"]["repeat-01"]
    wait_head(page, SMALL, h, 0, 1)
    assert "L0 H1" in page.page.locator("#crumbs").text_content()
    check_hover(lambda i, j: hover_cell(page, i, j), save, SMALL, h, layer=0, head=1)
    page.shot("head")


@pytest.mark.browser
def test_zoomed_long_prompt_hover_after_scroll(page, store):
    save, h = store["save_path"], store["hashes"]["long-01"]
    wait_head(page, GRID, h, 5, 7)
    for _ in range(6):
        page.page.keyboard.press("+")
    s = page.page.locator(".scroller")
    assert float(s.get_attribute("data-cell")) > 6
    s.evaluate("e => { e.scrollTop = e.scrollHeight; e.scrollLeft = e.scrollWidth / 2; }")
    page.page.wait_for_timeout(100)
    pat = npz_layer(save, GRID, h, 5)[7]
    cs = float(s.get_attribute("data-cell"))
    left, top = s.evaluate("e => [e.scrollLeft, e.scrollTop]")
    i, j = int((top + 200) // cs), int((left + 100) // cs)
    text = hover_cell(page, i, j)
    assert value_line(text) == shown_value(pat[i, j]), (i, j, text)
    page.page.mouse.click(*[v for v in _center(page, i, j)])
    assert "attends most to" in page.page.locator(".sel-panel").text_content()
    page.shot("head-long-zoomed")


def _center(pg, i, j):
    s = pg.page.locator(".scroller")
    cs, box = float(s.get_attribute("data-cell")), s.bounding_box()
    left, top = s.evaluate("e => [e.scrollLeft, e.scrollTop]")
    return box["x"] + (j + 0.5) * cs - left, box["y"] + (i + 0.5) * cs - top


@pytest.mark.browser
def test_keys_faster_than_hashchange_each_move_from_where_the_last_left(page):
    """Three arrow keys in one task, before any "hashchange" can run: each must move from the
    head the previous key chose, not from the one the page showed before the keys."""
    page.open()
    page.page.wait_for_selector(".vrow")
    page.page.keyboard.press("j")
    page.page.keyboard.press("Enter")
    page.page.wait_for_selector("canvas.thumb")
    page.page.keyboard.press("Enter")
    page.page.wait_for_selector(".pane[data-draw-ms]")
    start = page.page.evaluate("location.hash")
    assert start.endswith("/0/0")
    page.page.evaluate(
        """() => { for (const key of ["ArrowRight", "ArrowDown", "ArrowRight"])
                     dispatchEvent(new KeyboardEvent("keydown", { key })); }"""
    )
    assert page.page.evaluate("location.hash") == start[: -len("/0/0")] + "/1/2"
    page.page.wait_for_function("() => document.querySelector('.pane').dataset.shown === '1/2'")


@pytest.mark.browser
def test_keyboard_reaches_head_and_moves(page):
    page.open()
    page.page.wait_for_selector(".vrow")
    kb = page.page.keyboard
    kb.press("j")
    kb.press("Enter")
    page.page.wait_for_selector("canvas.thumb")
    prompt_hash = page.page.evaluate("location.hash")
    assert prompt_hash.startswith(f"#/prompt/{GRID}/")
    page.shot("prompt-grid-12x12")
    kb.press("ArrowRight")
    kb.press("ArrowDown")
    kb.press("Enter")
    page.page.wait_for_selector(".pane[data-draw-ms]")
    head_hash = page.page.evaluate("location.hash")
    assert head_hash == prompt_hash.replace("#/prompt/", "#/head/") + "/1/1"
    kb.press("ArrowRight")
    page.page.wait_for_function("() => location.hash.endsWith('/1/2')")
    kb.press("ArrowDown")
    page.page.wait_for_function("() => location.hash.endsWith('/2/2')")
    kb.press("n")
    first_prompt = prompt_hash.rsplit("/", 1)[1]
    page.page.wait_for_function(f"() => !location.hash.includes({json.dumps(first_prompt)})")
    page.page.wait_for_selector(".pane[data-draw-ms]")
    # the next prompt may store fewer layers: the view moves to the nearest stored one
    assert re.fullmatch(rf"#/head/{GRID}/[\w-]+/\d+/2", page.page.evaluate("location.hash"))
    kb.press("Escape")
    page.page.wait_for_function("() => location.hash.startsWith('#/prompt/')")
    page.page.go_back()
    page.page.wait_for_function("() => location.hash.startsWith('#/head/')")
    page.page.go_back()
    page.page.go_back()
    page.page.wait_for_function("() => location.hash.endsWith('/1/2')")


@pytest.mark.browser
def test_xss_prompt_shows_literally_and_runs_nothing(page, store):
    h = store["xss_hash"]
    page.open(f"#/prompt/{SMALL}/{h}")
    page.page.wait_for_selector("canvas.thumb")
    assert page.page.locator(".prompt-text").text_content() == XSS_TEXT
    assert page.page.locator("#app img").count() == 0
    tokens = page.page.locator(".tok").all_text_contents()
    assert " onerror=alert(1)>" in tokens and " </script>" in tokens
    page.shot("prompt-xss")
    page.open("#/?q=onerror")
    page.page.wait_for_selector(".vrow:not([hidden])")
    assert "<img src=x onerror=alert(1)>" in page.page.locator(".vrow").first.text_content()
    wait_head(page, SMALL, h, 0, 0)
    assert '"<img"' in hover_cell(page, 1, 0)
    page.open(f"#/resid/{SMALL}/{h}")
    assert "No residuals stored" in page.page.locator("#app").text_content()
    assert page.page.evaluate("document.querySelectorAll('img').length") == 0


@pytest.mark.browser
@pytest.mark.parametrize("model", [SMALL, GRID])
def test_metrics_sorted_by_induction_put_planted_head_first(page, store, model):
    page.open(f"#/metrics/{model}?sort=layer&dir=asc")
    page.page.wait_for_selector("table.mtable tbody tr")
    page.page.click("th[data-key=induction]")
    first = page.page.locator("table.mtable tbody tr").first
    layer, head = store["induction_heads"][model]
    assert (first.get_attribute("data-layer"), first.get_attribute("data-head")) == (
        str(layer),
        str(head),
    )
    assert "induction" in first.text_content()
    assert "sort=induction&dir=desc" in page.page.evaluate("location.hash")
    page.shot(f"metrics-{model}")
    first.click()
    page.page.wait_for_function(f"() => location.hash.endsWith('/{layer}/{head}')")


@pytest.mark.browser
@pytest.mark.parametrize("model", [SMALL, GRID])
def test_metrics_heat_map_pointer_names_the_drawn_cell(page, store, model):
    n_layers, n_heads = (3, 2) if model == SMALL else (12, 12)
    page.open(f"#/metrics/{model}")
    page.page.wait_for_selector(".heat canvas")
    ev = page.page.evaluate

    def hover(li, hd):
        x, y = ev(HEAT_CENTRE_JS, [li, hd, n_layers, n_heads])
        page.page.mouse.move(x, y)
        page.page.wait_for_selector("#tip:not([hidden])")
        return page.page.locator("#tip").text_content()

    check_heat_pointer(hover, lambda w: ev(HEAT_RESIZE_JS, w), n_layers, n_heads)
    hover(n_layers - 1, n_heads - 1)
    page.page.mouse.down()
    page.page.mouse.up()
    page.page.wait_for_function(f"() => location.hash.endsWith('/{n_layers - 1}/{n_heads - 1}')")


@pytest.mark.browser
def test_theme_and_scale_toggles(page, store):
    page.open(f"#/prompt/{GRID}/{store['hashes']['long-01']}")
    page.page.wait_for_selector("canvas.thumb")
    html = page.page.locator("html")
    before = html.get_attribute("data-theme")
    bg = page.page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.page.click("#theme-toggle")
    assert html.get_attribute("data-theme") != before
    assert page.page.evaluate("getComputedStyle(document.body).backgroundColor") != bg
    page.page.click("#scale-toggle")
    assert page.page.locator("#scale-toggle").text_content() == "log"
    page.shot("prompt-dark-log")
    page.page.keyboard.press("t")
    page.page.keyboard.press("l")
    assert html.get_attribute("data-theme") == before
    assert page.page.locator("#scale-toggle").text_content() == "linear"
    page.page.keyboard.press("?")
    assert page.page.locator("#help").is_visible()
    assert "next / previous prompt" in page.page.locator("#help").text_content()


@pytest.mark.browser
def test_theme_follows_the_system_preference(browser, store, artifacts):
    pg = Page(browser, store, artifacts)
    try:
        pg.page.emulate_media(color_scheme="dark")
        pg.open()
        assert pg.page.locator("html").get_attribute("data-theme") == "dark"
        pg.shot("home-dark")
        pg.check_clean()
    finally:
        pg.page.close()


@pytest.mark.browser
def test_compare_and_residual_views(page, store):
    h = store["hashes"]["repeat-01"]
    page.open(f"#/compare/{GRID}/{h}/5/7/{SMALL}/{h}/1/1")
    page.page.wait_for_function(
        "() => document.querySelectorAll('.pane[data-draw-ms]').length == 2"
    )
    text = hover_cell(page, 20, 9, scroller=".pane-col:nth-child(2) .scroller")
    assert value_line(text) == shown_value(npz_layer(store["save_path"], SMALL, h, 1)[1][20, 9])
    page.shot("compare")
    page.open(f"#/resid/{GRID}/{store['hashes']['long-01']}")
    page.page.wait_for_selector(".resid-wrap canvas")
    page.shot("resid")


DEEP = ModelSpec("deep-60x1", 60, 1, 8, induction_head=(1, 0), resid_dtype=None)


@pytest.fixture(scope="module")
def deep_store(tmp_path_factory):
    """Six short prompts of a 60-layer model: 366 data scripts, far more than the page keeps
    decoded. Short prompts have no thumbnails, so a prompt's grid loads every layer."""
    info = write_store(tmp_path_factory.mktemp("deep"), models=[DEEP], n_prompts=6, special=False)
    write_viewer(info["save_path"], log=quiet)
    info["order"] = sorted(info["hashes"].values())
    return info


@pytest.mark.browser
def test_data_scripts_load_when_shown_and_a_bounded_number_stay_decoded(
    browser, deep_store, artifacts
):
    pg = Page(browser, deep_store, artifacts)
    first, *others = deep_store["order"]

    def loaded(name: str, h: str = first) -> int:
        return sum(u.endswith(f"/{model_slug(DEEP.name)}/{h}/{name}") for u in pg.requests)

    try:
        wait_head(pg, DEEP.name, first, 0, 0)
        data = [u.split(f"/{DATA_DIR}/")[1] for u in pg.requests if f"/{DATA_DIR}/" in u]
        here = f"{model_slug(DEEP.name)}/{first}"
        assert sorted(data) == sorted([f"{here}/L0.js", f"{here}/prompt.js", "lens_index.js"])
        wait_head(pg, DEEP.name, first, 1, 0)
        wait_head(pg, DEEP.name, first, 0, 0)  # shown again: still decoded, not loaded again
        assert (loaded("L0.js"), loaded("L1.js"), loaded("prompt.js")) == (1, 1, 1)
        for h in others:  # every layer of five more prompts: 305 more scripts decoded
            pg.open(f"#/prompt/{DEEP.name}/{h}")
            pg.page.wait_for_function("() => document.querySelectorAll('canvas.thumb').length")
            for _ in range(600):
                if sum(loaded(f"L{i}.js", h) for i in range(60)) == 60:
                    break
                pg.page.wait_for_timeout(50)
            assert all(loaded(f"L{i}.js", h) == 1 for i in range(60)), h
        wait_head(pg, DEEP.name, others[-1], 59, 0)  # recent: kept
        assert loaded("L59.js", others[-1]) == 1
        wait_head(pg, DEEP.name, first, 0, 0)  # long ago: dropped, so loaded again
        assert (loaded("L0.js"), loaded("prompt.js")) == (2, 2)
        pg.check_clean()
    finally:
        pg.page.close()


@pytest.mark.browser
def test_token_and_lens_hover_in_chromium(browser, prediction_store, artifacts):
    page = Page(browser, prediction_store, artifacts)
    pg, s = page.page, prediction_store
    page.open(f"#/prompt/{s['model']}/{s['hash']}")
    pg.wait_for_selector(".tokens.scored .tok")
    for i in (1, 5):
        pg.mouse.move(*chromium_point(pg, TOKEN_POINT, i))
        pg.wait_for_function(
            f"document.getElementById('tip').textContent.startsWith('position {i}:')"
        )
        check_token_tip(pg.locator("#tip").text_content(), s, i)
    page.shot("prediction-tokens")
    page.open(f"#/lens/{s['model']}/{s['hash']}")
    pg.wait_for_selector(".lens-scroller[data-drawn]")
    for li, i in ((0, 2), (1, 7)):
        pg.mouse.move(*chromium_point(pg, LENS_POINT, li, i))
        pg.wait_for_function(
            f"document.getElementById('tip').textContent.startsWith('layer {li}, position {i}:')"
        )
        check_lens_tip(pg.locator("#tip").text_content(), s, li, i)
    page.shot("logit-lens")
    a, b = s["model"], s["other"]
    page.open(f"#/compare/{a}/{s['hash']}/0/0/{b}/{s['hash']}/0/0")
    pg.wait_for_selector(".loss-diff .tok")
    i = 4
    pg.locator(".loss-diff .tok").nth(i).hover()
    pg.wait_for_function(f"document.getElementById('tip').textContent.startsWith('position {i}:')")
    text = pg.locator("#tip").text_content()
    la, lb = float(s["pred"]["loss"][i - 1]), float(s["other_loss"][i - 1])
    assert f"loss {a}: {la:.4f}" in text and f"loss {b}: {lb:.4f}" in text, text
    assert f"difference: {lb - la:.4f}" in text, text
    page.page.close()
    page.check_clean()


@pytest.mark.browser
def test_lens_view_of_a_prompt_without_the_lens_says_how_to_add_it(page, store):
    # Reached by address (or prev/next); nothing was exported, so no data script may be asked for.
    page.open(f"#/lens/{GRID}/{store['hashes']['repeat-01']}")
    note = page.page.locator(".lens-wrap .note")
    note.wait_for()
    page.page.wait_for_function(
        "document.querySelector('.lens-wrap .note').textContent.includes('not exported')"
    )
    assert "logit_lens among --hooks" in note.text_content()
