"""User metrics (`lens_cache.metric`): registered from a module of their own, computed by the
viewer build for every stored head, read back in Python, equal to the function run by hand on
the stored patterns; pattern-lens figure functions through the adapter; figures pattern-lens's
`figures_main` wrote listed in the prompt's viewer data."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lens_cache
from lens_cache.errors import UserMetricError
from lens_cache.synthetic import SMALL_MODEL, write_store
from lens_cache.user_metrics import MATRIX_SIZE, registered_metrics, unregister
from lens_cache.viewer import DATA_DIR, model_slug, read_data_script, write_viewer
from tests.helpers import npz_layer, quiet

MODULE = Path(__file__).with_name("metric_module.py")
MODEL = SMALL_MODEL.name


@pytest.fixture
def registry():
    """Whatever a test registers is unregistered after it: other tests build the viewer too,
    and a store without user metrics must keep its bytes."""
    before = {m.name for m in registered_metrics()}
    yield
    for m in registered_metrics():
        if m.name not in before:
            unregister(m.name)


@pytest.fixture(scope="module")
def user_store(tmp_path_factory):
    """A 3-layer x 2-head store (with the 300-token prompt, whose matrices get pooled),
    its viewer built with the metrics of tests/metric_module.py registered."""
    info = write_store(tmp_path_factory.mktemp("user"), models=[SMALL_MODEL], n_prompts=3)
    module = lens_cache.load_metrics_module(MODULE)
    try:
        write_viewer(info["save_path"], log=quiet)
    finally:
        unregister(module.SCALAR)
        unregister(module.MATRIX)
    return {**info, "module": module}


def stored_prompts(save: Path) -> list[dict]:
    folder = save / MODEL / "prompts"
    return [json.loads((d / "prompt.json").read_text()) for d in sorted(folder.iterdir())]


def block_max(m: np.ndarray, size: int = MATRIX_SIZE) -> np.ndarray:
    """The documented pooling, cell by cell: block k of a side of n > size cells covers
    k*n//size up to (k+1)*n//size."""

    def edges(n):
        return [k * n // size for k in range(size + 1)] if n > size else list(range(n + 1))

    rows, cols = edges(m.shape[0]), edges(m.shape[1])
    return np.array(
        [
            [m[rows[i] : rows[i + 1], cols[j] : cols[j + 1]].max() for j in range(len(cols) - 1)]
            for i in range(len(rows) - 1)
        ]
    )


def test_registered_metric_equals_brute_force_on_stored_patterns(user_store):
    save, mod = user_store["save_path"], user_store["module"]
    values = lens_cache.read_user_metrics(save, MODEL)
    prompts = stored_prompts(save)
    assert sorted(values) == sorted(p["hash"] for p in prompts)
    pooled = 0
    for p in prompts:
        for layer in range(SMALL_MODEL.n_layers):
            pat = npz_layer(save, MODEL, p["hash"], layer)  # np.load of the stored npz
            for head in range(SMALL_MODEL.n_heads):
                scalar = mod.late_bos(pat[head], p["tokens"])
                assert values[p["hash"]][mod.SCALAR][layer, head] == scalar
                matrix = block_max(mod.squared_rows(pat[head], p["tokens"]).astype(np.float32))
                np.testing.assert_array_equal(values[p["hash"]][mod.MATRIX][layer, head], matrix)
        pooled += len(p["tokens"]) > 2 * MATRIX_SIZE
    assert pooled  # the long prompt's matrices were pooled, and pooled as documented


def test_model_average_in_the_index_is_the_mean_over_prompts(user_store):
    save, mod = user_store["save_path"], user_store["module"]
    index = read_data_script(save / DATA_DIR / "lens_index.js")[0]
    assert index["user_metrics"] == [
        {"name": mod.SCALAR, "kind": "scalar"},
        {"name": mod.MATRIX, "kind": "matrix"},
    ]
    per_prompt = []
    for p in stored_prompts(save):
        pats = [npz_layer(save, MODEL, p["hash"], i) for i in range(SMALL_MODEL.n_layers)]
        per_prompt.append([[mod.late_bos(h, p["tokens"]) for h in pat] for pat in pats])
    (model,) = index["models"]
    np.testing.assert_allclose(
        model["user"]["avg"][mod.SCALAR], np.mean(per_prompt, axis=0), atol=1e-5
    )


def js_files(save: Path) -> dict[str, bytes]:
    return {str(p.relative_to(save)): p.read_bytes() for p in sorted(save.rglob("*.js"))}


def test_registering_rebuilds_and_unregistering_gives_the_old_bytes_back(tmp_path, registry):
    save = write_store(tmp_path / "s", models=[SMALL_MODEL], n_prompts=2)["save_path"]
    write_viewer(save, log=quiet)
    plain = js_files(save)
    lens_cache.load_metrics_module(MODULE)
    assert write_viewer(save, log=quiet)["built"] == len(stored_prompts(save))
    assert len(lens_cache.read_user_metrics(save, MODEL)) == len(stored_prompts(save))
    assert write_viewer(save, log=quiet)["built"] == 0  # the same metrics: up to date

    @lens_cache.metric(name="late_bos")  # the same name, other code: rebuilt
    def changed(pattern, tokens):
        return float(pattern[-1, 0])

    assert write_viewer(save, log=quiet)["built"] == len(stored_prompts(save))
    for name in ("late_bos", "squared_rows"):
        unregister(name)
    assert write_viewer(save, log=quiet)["built"] == len(stored_prompts(save))
    assert js_files(save) == plain
    assert lens_cache.read_user_metrics(save, MODEL) == {}


LENS_CACHE = "from lens_cache.cli.main import console_script; raise SystemExit(console_script())"


def test_export_computes_registered_metrics_from_what_it_captured(gpt2_model, tmp_path, registry):
    """The export makes each prompt's viewer data in its writer threads from the tensors in
    memory: the values equal the function run on the npz it wrote."""
    mod = lens_cache.load_metrics_module(MODULE)
    texts = ["one two three one two three", "the cat sat on the mat and the cat sat", "a b"]
    lens_cache.export(gpt2_model, prompts=texts, save_path=tmp_path, hooks=["pattern"], quiet=True)
    name = gpt2_model.name
    values = lens_cache.read_user_metrics(tmp_path, name)
    assert len(values) == len(texts)
    for h, stored in values.items():
        record = json.loads((tmp_path / name / "prompts" / h / "prompt.json").read_text())
        for layer in range(stored[mod.SCALAR].shape[0]):
            pat = npz_layer(tmp_path, name, h, layer)
            expected = [mod.late_bos(a, record["tokens"]) for a in pat]
            np.testing.assert_array_equal(stored[mod.SCALAR][layer], expected)
            squared = [block_max(mod.squared_rows(a, record["tokens"])) for a in pat]
            np.testing.assert_array_equal(stored[mod.MATRIX][layer], squared)


def test_view_command_imports_the_metrics_module(tmp_path, cli_env):
    save = write_store(tmp_path / "s", models=[SMALL_MODEL], n_prompts=1)["save_path"]
    view = [sys.executable, "-c", LENS_CACHE, "view", "-q", "-s", str(save), "--metrics-module"]

    def run(module: str):
        return subprocess.run([*view, module], capture_output=True, text=True, env=cli_env)

    done = run(str(MODULE))
    assert done.returncode == 0, done.stderr
    values = lens_cache.read_user_metrics(save, MODEL)
    assert values and all(set(v) == {"late_bos", "squared_rows"} for v in values.values())
    bad = run("no_such_mod")
    assert bad.returncode == 2
    assert "--metrics-module 'no_such_mod': ModuleNotFoundError" in bad.stderr


def test_a_metric_that_fails_or_returns_the_wrong_kind_is_named(tmp_path, registry):
    save = write_store(tmp_path / "s", models=[SMALL_MODEL], n_prompts=1)["save_path"]
    with pytest.raises(UserMetricError, match="name 'bad name' is not usable"):
        lens_cache.metric(lambda p, t: 0.0, name="bad name")
    with pytest.raises(UserMetricError, match="kind must be one of"):
        lens_cache.metric(lambda p, t: 0.0, name="x", kind="vector")
    lens_cache.metric(lambda p, t: p[0], name="rowzero")
    with pytest.raises(UserMetricError, match="'rowzero' is a scalar metric but returned"):
        write_viewer(save, log=quiet, force=True)
    unregister("rowzero")

    @lens_cache.metric
    def writes(pattern, tokens):
        pattern[0, 0] = 2.0  # the stored values are read-only

    with pytest.raises(UserMetricError, match="'writes' raised ValueError on head 0"):
        write_viewer(save, log=quiet, force=True)


# ---------------------------------------------------------------- pattern-lens


def pattern_lens_figures():
    """pattern-lens's figure module (its figure helpers need matplotlib and pillow)."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("PIL")
    return pytest.importorskip("pattern_lens.attn_figure_funcs")


def test_pattern_lens_figure_functions_run_through_the_adapter(tmp_path, registry):
    funcs = pattern_lens_figures()
    from pattern_lens.figure_util import matplotlib_figure_saver, save_matrix_wrapper

    @funcs.register_attn_figure_func
    @save_matrix_wrapper(fmt="png", normalize=True)
    def early_rows(attn_matrix):
        return attn_matrix[: attn_matrix.shape[0] // 2]

    save = write_store(tmp_path / "s", models=[SMALL_MODEL], n_prompts=2)["save_path"]
    lens_cache.from_pattern_lens(funcs.raw)  # pattern-lens's own, as registered
    lens_cache.from_pattern_lens(early_rows)
    write_viewer(save, log=quiet)
    values = lens_cache.read_user_metrics(save, MODEL)
    for p in stored_prompts(save):
        for layer in range(SMALL_MODEL.n_layers):
            pat = npz_layer(save, MODEL, p["hash"], layer)
            stored = values[p["hash"]]
            np.testing.assert_array_equal(stored["raw"][layer], [block_max(a) for a in pat])
            halves = [block_max(a[: len(a) // 2]) for a in pat]
            np.testing.assert_array_equal(stored["early_rows"][layer], halves)
    early_rows(pat[0], tmp_path)  # and it still runs in pattern-lens, unchanged
    assert (tmp_path / "early_rows.png").is_file()

    @matplotlib_figure_saver
    def drawn(attn_matrix, ax):
        ax.matshow(attn_matrix)

    with pytest.raises(UserMetricError, match="returns no matrix.*figures_main"):
        lens_cache.from_pattern_lens(drawn)


def test_figures_written_by_figures_main_are_listed(tmp_path):
    pattern_lens_figures()
    from pattern_lens.figures import figures_main

    save = write_store(tmp_path / "s", models=[SMALL_MODEL], n_prompts=1)["save_path"]
    figures_main(MODEL, save, n_samples=100, force=False, parallel=False)
    write_viewer(save, log=quiet)
    for p in stored_prompts(save):
        out = save / DATA_DIR / model_slug(MODEL) / p["hash"]
        figures = read_data_script(out / "prompt.js")[1]["figures"]
        written = sorted(
            f.relative_to(save / figures["dir"]).as_posix()
            for f in (save / MODEL / "prompts" / p["hash"]).rglob("*.png")
        )
        listed = sorted(
            f"L{head.split('/')[0]}/H{head.split('/')[1]}/{name}"
            for head, names in figures["heads"].items()
            for name in names
        )
        assert written and listed == written


# ---------------------------------------------------------------- in Chromium

ROW_CELLS = """() => { const keys = [...document.querySelectorAll('table.mtable th')].map(
  th => th.dataset.key || th.textContent); const row = document.querySelector(
  'table.mtable tbody tr'); return [row.dataset.layer, row.dataset.head, Object.fromEntries(
  [...row.children].map((td, k) => [keys[k], td.textContent]))]; }"""


def brute_average(save: Path, mod) -> np.ndarray:
    """`late_bos` per head, averaged over the stored prompts, from the npz files."""
    per_prompt = []
    for p in stored_prompts(save):
        pats = [npz_layer(save, MODEL, p["hash"], i) for i in range(SMALL_MODEL.n_layers)]
        per_prompt.append([[mod.late_bos(h, p["tokens"]) for h in pat] for pat in pats])
    return np.mean(per_prompt, axis=0)


@pytest.fixture
def user_page(browser, user_store, artifacts):
    from tests.browser import Page

    pg = Page(browser, user_store, artifacts)
    yield pg
    pg.page.close()
    pg.check_clean()


@pytest.mark.browser
def test_metrics_page_sorts_by_a_user_metric(user_page, user_store):
    avg = brute_average(user_store["save_path"], user_store["module"])
    user_page.open(f"#/metrics/{MODEL}?sort=layer&dir=asc")
    user_page.page.wait_for_selector("table.mtable tbody tr")
    user_page.page.click("th[data-key='u:late_bos']")
    layer, head, cells = user_page.page.evaluate(ROW_CELLS)
    best = np.unravel_index(np.argmax(avg), avg.shape)
    assert (int(layer), int(head)) == best
    assert cells["u:late_bos"] == f"{avg[best]:.3f}"
    assert "sort=u%3Alate_bos" in user_page.page.evaluate("location.hash")
    assert "late_bos" in user_page.page.locator(".heat .note").text_content()
    user_page.shot("metrics-user")


@pytest.mark.browser
def test_head_view_shows_user_values_and_the_matrix_thumbnail(user_page, user_store):
    from tests.browser import js_value

    save, mod = user_store["save_path"], user_store["module"]
    p = max(stored_prompts(save), key=lambda r: len(r["tokens"]))  # pooled matrices
    layer, head = 1, 1
    pat = npz_layer(save, MODEL, p["hash"], layer)[head]
    user_page.open(f"#/head/{MODEL}/{p['hash']}/{layer}/{head}")
    cell = user_page.page.wait_for_selector(".user-scalars td[data-name=late_bos]")
    assert cell.text_content() == js_value(mod.late_bos(pat, p["tokens"]))
    canvas = user_page.page.locator("canvas.user-matrix[data-name=squared_rows]")
    matrix = block_max(mod.squared_rows(pat, p["tokens"]).astype(np.float32))
    assert (canvas.get_attribute("data-rows"), canvas.get_attribute("data-cols")) == tuple(
        str(n) for n in matrix.shape
    )
    box, size = canvas.bounding_box(), int(canvas.get_attribute("data-cell"))  # 1px border
    for i, j in [(0, 0), (matrix.shape[0] - 1, matrix.shape[1] - 1), (5, 3)]:
        x, y = box["x"] + 1 + (j + 0.5) * size, box["y"] + 1 + (i + 0.5) * size
        user_page.page.mouse.move(x, y)
        user_page.page.wait_for_selector("#tip:not([hidden])")
        tip = user_page.page.locator("#tip").text_content()
        assert f"squared_rows [{i}, {j}]" in tip and f"value {js_value(float(matrix[i, j]))}" in tip
    user_page.shot("head-user")


@pytest.mark.browser
def test_head_view_shows_the_figures_figures_main_wrote(browser, tmp_path, artifacts):
    pattern_lens_figures()
    from pattern_lens.figures import figures_main

    from tests.browser import Page

    info = write_store(tmp_path / "s", models=[SMALL_MODEL], n_prompts=1)
    figures_main(MODEL, info["save_path"], n_samples=100, force=False, parallel=False)
    write_viewer(info["save_path"], log=quiet)
    h = stored_prompts(info["save_path"])[0]["hash"]
    pg = Page(browser, info, artifacts)
    pg.open(f"#/head/{MODEL}/{h}/2/1")
    img = pg.page.wait_for_selector(".figures a[data-figure='raw.png'] img")
    pg.page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=img)
    src = img.evaluate("i => i.src")
    assert src == (info["save_path"] / MODEL / "prompts" / h / "L2" / "H1" / "raw.png").as_uri()
    pg.shot("head-figures")
    pg.page.close()
    pg.check_clean()
