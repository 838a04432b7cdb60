"""The compact pattern for long prompts (`--hooks pattern_topk`, lens_cache.topk), checked
against transformers' own eager attention (`output_attentions=True`) on the same token ids,
reduced by numpy brute force: a sort for the top-k, `reduceat` for the block overview."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import lens_cache
from lens_cache.errors import ActivationsMissingError, DamagedFileError
from lens_cache.topk import n_blocks
from tests.conftest import DEFAULT_PROMPTS
from tests.helpers import REPO, prompt_dir, safetensors_metadata

K = 8


def _long_text(n_words: int) -> str:
    with open(DEFAULT_PROMPTS, encoding="utf-8") as f:
        words = " ".join(json.loads(line)["text"] for line in f if line.strip()).split()
    return " ".join(words[:n_words])


TEXTS = [_long_text(180), "A short one."]  # the first over 256 tokens: overview blocks of 2


@pytest.fixture(scope="module", params=["gpt2", "gqa"])
def compact(request, tmp_path_factory):
    """(HF directory, store, model name): each tiny model's compact patterns of TEXTS."""
    live = request.getfixturevalue(f"{request.param}_model")
    path = tmp_path_factory.mktemp("topk")
    lens_cache.export(
        live, prompts=TEXTS, save_path=path, hooks=["pattern_topk"], topk_keys=K, quiet=True
    )
    hf_dir = request.getfixturevalue(f"{request.param}_dir")
    return hf_dir, lens_cache.open(path), live.name


def _eager_patterns(hf_dir, ids) -> np.ndarray:
    """[layers, heads, T, T] from transformers' eager attention, float64."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(hf_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_attentions=True)
    return np.stack([a[0].double().numpy() for a in out.attentions])


def _block_reduce(pattern: np.ndarray, block: int, ufunc) -> np.ndarray:
    starts = np.arange(0, pattern.shape[-1], block)
    return ufunc.reduceat(ufunc.reduceat(pattern, starts, axis=-1), starts, axis=-2)


@pytest.mark.parametrize("text", TEXTS)
def test_top_keys_rest_and_overview_match_eager_attention(compact, text):
    hf_dir, store, model = compact
    ids = store.prompt(model, text)["token_ids"]
    want = _eager_patterns(hf_dir, ids)
    got = store.pattern_topk(model, text)
    n = len(ids)
    assert got["keys"].shape == (*want.shape[:3], min(K, n))
    top = -np.sort(-want, axis=-1)[..., :K]  # the k largest of each row, strongest first
    np.testing.assert_allclose(got["values"], top, atol=1e-5)
    keys, values = got["keys"], got["values"]
    present = keys >= 0
    # every stored key is a key the row attends with that weight, none after the query
    cells = np.take_along_axis(want, np.where(present, keys, 0), axis=-1)
    np.testing.assert_allclose(np.where(present, cells, 0), values, atol=1e-5)
    assert (keys <= np.arange(n)[:, None]).all()
    assert (present.sum(-1) == np.minimum(np.arange(n) + 1, K)).all()  # -1 only past the row
    np.testing.assert_allclose(values.sum(-1, dtype=np.float64) + got["rest"], 1.0, atol=1e-5)
    np.testing.assert_allclose(got["rest"], want.sum(-1) - top.sum(-1), atol=1e-5)
    block = 2 if n > 256 else 1
    assert got["block"] == block
    np.testing.assert_allclose(got["overview_max"], _block_reduce(want, block, np.maximum), 1e-5)
    np.testing.assert_allclose(got["overview_sum"], _block_reduce(want, block, np.add), 1e-5)


def test_a_length_not_a_whole_number_of_blocks_pools_its_short_last_block():
    """2,050 tokens: blocks of 9, the last one 7 wide. The compaction of a random causal
    softmax pattern equals numpy's sort and block reduction of the same array."""
    from lens_cache.topk import block_size, compact_layer

    n = 2050
    scores = torch.randn(2, n, n, generator=torch.Generator().manual_seed(0)) * 3
    pattern = scores.masked_fill(torch.ones(n, n).triu(1).bool(), -torch.inf).softmax(-1)
    got = {
        name.split(".")[-1]: v.numpy()
        for name, v in compact_layer(pattern, 0, K, torch.float32).items()
    }
    want = pattern.double().numpy()
    block = block_size(n)
    assert (block, n % block) == (9, 7)
    np.testing.assert_allclose(got["overview_max"], _block_reduce(want, block, np.maximum), 1e-6)
    np.testing.assert_allclose(got["overview_sum"], _block_reduce(want, block, np.add), 1e-5)
    top = -np.sort(-want, axis=-1)[..., :K]
    np.testing.assert_allclose(got["values"], top, atol=1e-6)
    np.testing.assert_allclose(got["rest"], 1 - top.sum(-1), atol=1e-5)


def test_layer_groups_with_the_dense_pattern_too_store_both(gpt2_model, gpt2_dir, tmp_path):
    """A prompt over the cap, one layer per pass: the npz and the compact file both written,
    the compact one equal to the eager attention's top keys."""
    lens_cache.export(
        gpt2_model, prompts=TEXTS[:1], save_path=tmp_path, hooks=["pattern", "pattern_topk"],
        topk_keys=K, max_batch_mb=0.5, quiet=True,
    )  # fmt: skip
    store = lens_cache.open(tmp_path)
    model = gpt2_model.name
    want = _eager_patterns(gpt2_dir, store.prompt(model, TEXTS[0])["token_ids"])
    np.testing.assert_allclose(store.patterns(model, TEXTS[0]), want, atol=1e-5)
    top = -np.sort(-want, axis=-1)[..., :K]
    np.testing.assert_allclose(store.pattern_topk(model, TEXTS[0])["values"], top, atol=1e-5)


@pytest.mark.parametrize("name", ["gpt2", "gqa"])
def test_alone_over_the_cap_it_runs_the_forward_once(request, name, tmp_path, monkeypatch):
    """Without the dense pattern, each layer is compacted in a hook as it fires: a prompt whose
    dense cache is over --max-batch-mb still takes one forward pass, not one per layer group,
    and what it stores is still eager attention's top keys."""
    live, hf_dir = request.getfixturevalue(f"{name}_model"), request.getfixturevalue(f"{name}_dir")
    passes = []
    run = live.run  # the real forward, counted
    monkeypatch.setattr(live, "run", lambda *a, **kw: passes.append(a[1]) or run(*a, **kw))
    lens_cache.export(
        live, prompts=TEXTS[:1], save_path=tmp_path, hooks=["pattern_topk"], topk_keys=K,
        max_batch_mb=0.5, quiet=True,
    )  # fmt: skip
    assert len(passes) == 1, passes
    store = lens_cache.open(tmp_path)
    want = _eager_patterns(hf_dir, store.prompt(live.name, TEXTS[0])["token_ids"])
    assert want.size * 4 > 0.5 * 2**20  # the float32 dense cache is over the cap
    top = -np.sort(-want, axis=-1)[..., :K]
    np.testing.assert_allclose(store.pattern_topk(live.name, TEXTS[0])["values"], top, atol=1e-5)


@pytest.mark.parametrize("compact", ["gpt2"], indirect=True)
def test_another_topk_keys_is_named_in_the_settings_mismatch(compact, gpt2_model):
    from lens_cache.errors import SettingsMismatchError

    _, store, _ = compact
    with pytest.raises(SettingsMismatchError, match=f"topk_keys: stored {K}, asked 4"):
        lens_cache.export(
            gpt2_model, TEXTS[1:], store.path, hooks=["pattern_topk"], topk_keys=4, quiet=True
        )


@pytest.mark.parametrize(
    "hooks, per_layer, once",  # in units of 4 bytes, by hand: H T^2 per pattern, T d per stream
    [
        # alone, the compact kind caches no pattern: the forward holds the layer it computes
        (["pattern_topk"], lambda H, T, d: 0, lambda H, T, d: H * T * T),
        (["pattern", "pattern_topk"], lambda H, T, d: H * T * T, lambda H, T, d: 0),
        (["pattern", "head_contributions"], lambda H, T, d: H * T * T + 2 * T * d, lambda *_: 0),
        (["pattern_topk", "resid_post"], lambda H, T, d: T * d, lambda H, T, d: H * T * T),
        (["pattern_topk", "head_metrics"], lambda H, T, d: H * T * T, lambda *_: 0),
    ],
)
def test_the_batch_cap_counts_the_dense_pattern_once(gpt2_model, hooks, per_layer, once):
    """What a prompt costs in the forward's cache, which decides the layer groups."""
    from lens_cache.exporter import _cache_bytes
    from lens_cache.store import ExportSettings

    m, t = gpt2_model, 300
    settings = ExportSettings(hooks=tuple(hooks), layers=(0, 1))
    expected = 2 * per_layer(m.n_heads, t, m.d_model) + once(m.n_heads, t, m.d_model)
    assert _cache_bytes(m, settings, t) == 4 * expected


def test_dense_reconstruction_keeps_the_stored_cells_and_reports_the_rest(compact):
    hf_dir, store, model = compact
    ids = store.prompt(model, TEXTS[0])["token_ids"]
    want = _eager_patterns(hf_dir, ids)[-1:, 2:3]
    got = store.pattern_from_topk(model, TEXTS[0], layers=[-1], heads=[2])
    stored = got["pattern"] > 0
    assert got["pattern"].shape == want.shape
    assert (stored.sum(-1) <= K).all()
    np.testing.assert_allclose(got["pattern"][stored], want[stored], atol=1e-5)
    np.testing.assert_allclose(got["pattern"].sum(-1) + got["rest"], 1.0, atol=1e-5)
    assert got["rest"].max() > 0.1  # random weights spread attention: much is left out


def test_only_the_compact_file_is_written_and_the_dense_pattern_is_not(compact):
    _, store, model = compact
    folder = prompt_dir(store.path, model, TEXTS[0])
    assert sorted(p.name for p in folder.iterdir()) == ["pattern_topk.safetensors", "prompt.json"]
    assert safetensors_metadata(folder / "pattern_topk.safetensors")["block"] == "2"
    with pytest.raises(ActivationsMissingError, match="no attention patterns"):
        store.patterns(model, TEXTS[0])


def test_a_header_claiming_more_than_the_prompt_is_refused_before_its_data(compact, tmp_path):
    import shutil

    _, store, model = compact
    copy = tmp_path / "store"
    shutil.copytree(store.path, copy)
    path = prompt_dir(copy, model, TEXTS[1]) / "pattern_topk.safetensors"
    from lens_cache import formats

    header, start, meta = formats.safetensors_header(path)
    heads, n = header["blocks.0.attn.topk.rest"]["shape"]
    header["blocks.0.attn.topk.rest"]["shape"] = [n, heads]  # as many bytes, another shape
    data = path.read_bytes()[start:]
    path.write_bytes(formats.safetensors_header_bytes({**header, "__metadata__": meta}) + data)
    with pytest.raises(DamagedFileError, match=r"topk\.rest: F32 \(\d+, 4\), expected"):
        lens_cache.open(copy).pattern_topk(model, TEXTS[1])
    from lens_cache.cache import verify_store

    problems, _ = verify_store(copy, quiet=True)
    assert [(p.status, p.path) for p in problems] == [("corrupt", path)]


MEMORY_CHILD = """
import json, resource, sys
import torch
from transformers import LlamaConfig, LlamaForCausalLM, AutoTokenizer
from lens_cache import export
from lens_cache.models import load_model

tok_dir, model_dir, save, n_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=8,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  bos_token_id=0, eos_token_id=0, pad_token_id=0)
LlamaForCausalLM(cfg).save_pretrained(model_dir)
AutoTokenizer.from_pretrained(tok_dir).save_pretrained(model_dir)
model = load_model(model_dir, device="cpu")
kw = dict(hooks=["pattern_topk"], max_batch_mb=1, index_html=False, quiet=True, topk_keys=16)
words = " ".join(f"w{i % 89} {i % 7}" for i in range(n_tokens))
long = words[: len(words) * n_tokens // len(model.tokenize(words))]
export(model, [long[:800]], save_path=save + "-warm", **kw)  # every code path once
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
(report,) = export(model, [long], save_path=save, **kw)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = report.tokens
layer = model.n_heads * t * t * 4 / 2**20
print(json.dumps({"before_mb": before, "after_mb": after, "layer_mb": layer, "tokens": t,
                  "layers": model.n_layers}))
"""


def test_memory_is_bounded_by_one_layer_not_the_prompt(tokenizer_dir, tmp_path, cli_env):
    """docs/limits.md's bound: a prompt over --max-batch-mb, compacted layer by layer as each
    pattern fires, so the peak grows by a few layers' patterns (the forward's own scores and
    softmax, the compaction's temporaries), not by all of them."""
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(tokenizer_dir), str(tmp_path / "model"),
         str(tmp_path / "store"), "1536"],
        env=cli_env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    assert m["tokens"] > 1200, m
    bound = 3 * m["layer_mb"] + 64  # see docs/limits.md
    assert m["layers"] * m["layer_mb"] > 1.5 * bound  # the whole prompt would break it
    assert m["after_mb"] - m["before_mb"] <= bound, m


@pytest.mark.parametrize("compact", ["gpt2"], indirect=True)  # one model: slow
def test_cache_verify_lists_it_and_hub_push_and_pull_bring_it_back(hub, compact, tmp_path):
    """`cache verify` reads the file (a damaged copy is named: see the header test); push sends
    the kind and a pull writes each prompt's file back bit for bit, readable by `pattern_topk`."""
    from lens_cache.cache import verify_store
    from tests.test_hub import _blob, run_child

    _, store, model = compact
    assert verify_store(store.path, quiet=True)[0] == []
    save = str(store.path)
    out = run_child(
        hub,
        tmp_path / "work",
        code=f"""
        out = {{"push": cli("push", "--repo", "alice/topk-{model}", "-s", {save!r}, "--kinds",
                            "pattern_topk")}}
        out["pull"] = cli("pull", "--repo", "alice/topk-{model}", "-s", "back", "-q")
        """,
    )
    assert out["push"]["rc"] == 0 and out["pull"]["rc"] == 0, out
    manifest = json.loads(_blob(hub, f"alice/topk-{model}", "lens_cache.json"))
    assert manifest["format_version"] == 5  # older lens_cache: "upgrade", not "unsafe path"
    back = lens_cache.open(tmp_path / "work" / "back")
    for text in TEXTS:
        name = "pattern_topk.safetensors"
        pulled = (prompt_dir(back.path, model, text) / name).read_bytes()
        assert pulled == (prompt_dir(store.path, model, text) / name).read_bytes()
    np.testing.assert_array_equal(back.pattern_topk(model, TEXTS[0])["keys"],
                                  store.pattern_topk(model, TEXTS[0])["keys"])  # fmt: skip


def test_the_long_prompt_bench_row_measures_a_real_export(gqa_dir):
    """`make bench`'s long-prompt row (lens_cache.bench_long) on a tiny model: a prompt of the
    length asked, its compact file against the dense bytes it stands for."""
    from lens_cache import bench_long

    r = bench_long.child(str(gqa_dir), 400, "cpu", topk_keys=K, cap_mb=1)
    assert r["exported"] == 1 and 390 <= r["tokens"] <= 400, r
    assert r["dense_npz_mb"] == 3 * 4 * r["tokens"] ** 2 * 4 / 1e6  # layers x heads x T^2 x 4
    fields = 3 * 4 * r["tokens"] * (K * 8 + 4) + 3 * 4 * 2 * n_blocks(r["tokens"]) ** 2 * 4
    assert fields < r["compact_mb"] * 1e6 < fields + 20_000  # the tensors and a header
    assert r["forward_s"] > 0 and r["export_s"] > 0


@pytest.mark.parametrize("compact", ["gpt2"], indirect=True)  # one model: slow
def test_the_viewer_opens_the_overview_and_a_zoomed_cell_shows_the_stored_value(
    compact, browser, artifacts
):
    """Chromium from file://: the head of a long prompt opens on its overview (hover: the
    stored block max) and a zoomed region shows a stored cell's value as stored, and says a
    cell of the same row is below the row's k-th value."""
    from tests.browser import Page, js_to_precision

    _, store, model = compact
    h, layer, head = store.prompt(model, TEXTS[0])["hash"], 1, 2
    got = store.pattern_topk(model, h, layers=[layer])
    keys, values = got["keys"][0, head], got["values"][0, head]
    q = 400
    key = int(keys[q, 0])  # the row's strongest key
    r0, c0 = q - 60, max(0, key - 60)
    pg = Page(browser, {"save_path": store.path}, artifacts)
    pg.open(f"#/topk/{model}/{h}/{layer}/{head}?r={r0}&c={c0}")
    pg.page.wait_for_selector("canvas.topk-zoom[data-drawn]")
    pg.shot(f"topk-{model}")

    def hover(selector: str, i: int, j: int, n: int) -> str:
        pg.page.locator(selector).scroll_into_view_if_needed()
        box = pg.page.locator(selector).bounding_box()
        pg.page.mouse.move(box["x"] + (j + 0.5) * box["width"] / n,
                           box["y"] + (i + 0.5) * box["height"] / n)  # fmt: skip
        pg.page.wait_for_selector("#tip:not([hidden])")
        return pg.page.locator("#tip").text_content()

    zoom = pg.page.locator("canvas.topk-zoom")
    z0, zc, size = (int(zoom.get_attribute(f"data-{a}")) for a in ("r0", "c0", "size"))
    text = hover("canvas.topk-zoom", q - z0, key - zc, size)
    assert f"value {js_to_precision(float(values[q, 0]))}" in text, text
    unstored = next(j for j in range(zc, min(zc + size, q + 1)) if j not in keys[q])
    assert "below the row's k-th value" in hover("canvas.topk-zoom", q - z0, unstored - zc, size)
    # only the overview and the band of rows 256-511 that the region (rows 340-467) crosses
    loaded = sorted(u.rsplit("/", 1)[1] for u in pg.requests if f"/{h}/K" in u)
    assert loaded == [f"K{layer}.js", f"K{layer}_1.js"], loaded
    omax, n_blocks_ = got["overview_max"][0, head], got["overview_max"].shape[-1]
    bi, bj = np.unravel_index(np.argmax(np.tril(omax, -1)), omax.shape)
    text = hover("canvas.topk-overview", bi, bj, n_blocks_)
    assert f"max {js_to_precision(float(omax[bi, bj]))}" in text, text
    pg.page.keyboard.press("l")  # the log colour scale: both canvases drawn again
    pg.page.wait_for_function("document.getElementById('scale-toggle').textContent === 'log'")
    pg.check_clean()


def _crafted(n: int, spike: tuple[int, int]) -> torch.Tensor:
    """[1, n, n]: every row uniform over its keys but one, whose mass is almost all on one far
    key: a needle the overview must keep visible."""
    rows = torch.tril(torch.ones(n, n))
    pattern = rows / rows.sum(-1, keepdim=True)
    q, key = spike
    pattern[q] = 0.01 / q
    pattern[q, key] = 0.99
    pattern[q, q + 1 :] = 0
    return pattern[None]


@pytest.mark.parametrize("compact", ["gpt2"], indirect=True)  # one model: slow
def test_a_single_far_back_spike_stays_visible_in_the_overview(
    compact, browser, artifacts, tmp_path
):
    """A crafted pattern (one strong cell far back, everything else near 1/T) written as a
    prompt's compact file: the overview's block holding it has the spike as its max, where a
    mean would have diluted it, and the viewer's overview hover shows it."""
    import shutil

    from lens_cache.store import write_safetensors
    from lens_cache.topk import block_size, compact_layer
    from lens_cache.viewer import write_viewer
    from tests.browser import Page, js_to_precision

    _, store, model = compact
    copy = tmp_path / "store"
    shutil.copytree(store.path, copy)
    h = store.prompt(model, TEXTS[0])["hash"]
    n, heads, spike = store.prompt(model, h)["n_tokens"], 4, (470, 3)
    tensors = {}
    for layer in (0, 1):
        pattern = _crafted(n, spike).expand(heads, n, n)
        tensors.update(compact_layer(pattern, layer, K, torch.float32))
    path = copy / model / "prompts" / h / "pattern_topk.safetensors"
    meta = safetensors_metadata(path)
    write_safetensors(path, tensors, meta)
    write_viewer(copy, log=lambda _m: None)
    b = block_size(n)
    omax = lens_cache.open(copy).pattern_topk(model, h)["overview_max"][1, 2]
    bi, bj = spike[0] // b, spike[1] // b
    assert omax[bi, bj] == np.float32(0.99)
    pg = Page(browser, {"save_path": copy}, artifacts)
    pg.open(f"#/topk/{model}/{h}/1/2")
    canvas = pg.page.locator("canvas.topk-overview")
    canvas.wait_for()
    pg.page.wait_for_selector("canvas.topk-overview[data-blocks]")
    canvas.scroll_into_view_if_needed()
    box, side = canvas.bounding_box(), int(canvas.get_attribute("data-blocks"))
    pg.page.mouse.move(box["x"] + (bj + 0.5) * box["width"] / side,
                       box["y"] + (bi + 0.5) * box["height"] / side)  # fmt: skip
    pg.page.wait_for_selector("#tip:not([hidden])")
    assert (
        f"max {js_to_precision(float(np.float32(0.99)))}" in pg.page.locator("#tip").text_content()
    )
    pg.check_clean()
