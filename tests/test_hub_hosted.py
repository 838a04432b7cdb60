"""The hosted viewer: what a push writes for it (`viewer/index.json`, the prompts' page data),
the static Space that holds the page, and the page itself reading a dataset from the test Hub.

The store is a real export of a tiny model; pushes run in child processes with the real
`huggingface_hub` client (see tests/test_hub.py). Every value is checked against the store's own
files (`activations.npz`, `prompt.json`) read here with numpy, never against our index.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors

from lens_cache import export
from lens_cache.prompts import prompt_hash
from lens_cache.reader import Store
from lens_cache.synthetic import XSS_TEXT
from tests.browser import (
    LENS_POINT,
    TOKEN_POINT,
    TOP_ROWS,
    Page,
    check_lens_tip,
    check_token_tip,
    check_top_rows,
    chromium_point,
    hover_cell,
    js_to_precision,
    value_line,
    wait_head,
)
from tests.helpers import brute_force_top, npz_layer
from tests.test_hub import run_child

PROMPTS = [
    {"text": "The cat sat on the mat because it was warm.", "meta": {"kind": "prose"}},
    {"text": XSS_TEXT, "meta": {"kind": "<b>xss</b>"}},
    {"text": "one two three one two three one two", "meta": {"kind": "repeat"}},
]
HEADS = {0: [1, 2], 2: [0]}  # what the push sends: --heads 0.1,0.2,2.0
REPO, SPACE = "alice/hosted", "alice/viewer"


@pytest.fixture(scope="module")
def store(gqa_model, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("store")
    export(gqa_model, prompts=PROMPTS, save_path=path, hooks=["pattern"], quiet=True)
    hashes = {p["text"]: prompt_hash(p["text"]) for p in PROMPTS}
    return {"path": path, "model": gqa_model.name, "hashes": hashes}


def _files(hub, repo: str, rtype: str = "dataset") -> dict:
    r = hub.repos[f"{rtype}:{repo}"]
    return r["commits"][r["branches"]["main"]]["files"]


def _blob(hub, repo: str, path: str, rtype: str = "dataset") -> bytes:
    return hub.blobs.get(_files(hub, repo, rtype)[path]["sha256"])


@pytest.fixture(scope="module")
def pushed(hub, store, tmp_path_factory) -> dict:
    heads = ",".join(f"{layer}.{h}" for layer, hs in HEADS.items() for h in hs)
    args = ["push", "--repo", REPO, "-s", store["path"], "--heads", heads, "--space", SPACE]
    proc = run_child(hub, tmp_path_factory.mktemp("push"), args)
    index = json.loads(_blob(hub, REPO, "viewer/index.json"))
    return {"index": index, "stdout": proc.stdout}


def _tensor(hub, path: str, key: str):
    return load_safetensors(_blob(hub, REPO, path))[key]


def test_index_lists_the_pushed_heads_where_they_lie(hub, store, pushed):
    """Every (prompt, head) pushed is found through the index: the shard the index names holds,
    at the index's offsets past its header, exactly the bytes of the store's pattern."""
    index, model = pushed["index"], store["model"]
    assert (index["format"], index["version"]) == ("lens_cache-viewer", 1)
    assert index["dtype"] == "float32"
    patterns = index["runs"][model]["patterns"]
    assert patterns["heads"] == {str(k): v for k, v in HEADS.items()}
    (run,) = patterns["runs"]
    assert sorted(run["hashes"]) == sorted(store["hashes"].values())
    for layer, heads in HEADS.items():
        for head in heads:
            path = f"tensors/{model}/patterns/layer_{layer:02d}/head_{head:02d}-00000.safetensors"
            data = _blob(hub, REPO, path)
            start = 8 + int.from_bytes(data[:8], "little")
            for h, (a, b) in zip(run["hashes"], run["offsets"], strict=True):
                want = npz_layer(store["path"], model, h, layer)[head].astype("<f4")
                assert data[start + a : start + b] == want.tobytes(), (layer, head, h)
                assert torch.equal(_tensor(hub, path, h), torch.from_numpy(want))


def test_index_prompts_and_page_data(hub, store, pushed):
    """The home page's prompts are the store's (text and meta as stored, markup and all), and
    each prompt's page data, read by its byte range, holds its tokens as the reader gives them."""
    index, model = pushed["index"], store["model"]
    viewer = index["viewer"]
    records = {r["hash"]: r for r in Store(store["path"]).prompts(model)}
    assert [m["name"] for m in viewer["models"]] == [model]
    assert {e["h"] for e in viewer["entries"]} == set(store["hashes"].values())
    for p in PROMPTS:
        h = store["hashes"][p["text"]]
        assert viewer["texts"][h] == {"text": p["text"], "meta": p["meta"]}
        path, a, b = index["payloads"][f"{model}|{h}"]
        payload = json.loads(_blob(hub, REPO, path)[a:b])
        assert payload["tokens"] == records[h]["tokens"]
        assert payload["layers"] == sorted(HEADS)
        # a head not pushed has no metrics on the page: its pattern stays home
        first = payload["metrics"]["first"]
        assert first[0][0] is None and first[0][1] is not None and first[1][1] is None


def test_index_metrics_match_the_patterns(hub, store, pushed):
    """A pushed head's 'first' metric (mean attention to the first token) is the mean of column
    0 of its stored pattern."""
    index, model = pushed["index"], store["model"]
    h = store["hashes"][PROMPTS[0]["text"]]
    path, a, b = index["payloads"][f"{model}|{h}"]
    payload = json.loads(_blob(hub, REPO, path)[a:b])
    pat = npz_layer(store["path"], model, h, 2)[0]
    got = payload["metrics"]["first"][1][0]
    assert got == pytest.approx(float(np.mean(pat[:, 0])), abs=1e-5)  # stored to 5 places


# --- the Space ----------------------------------------------------------------------------------


def test_push_prints_the_space_pinned_to_the_dataset(hub, pushed):
    assert pushed["stdout"].splitlines()[-1] == f"{hub.url}/spaces/{SPACE}"
    files = _files(hub, SPACE, "space")
    assert {"index.html", "hub_config.js", "hub_source.js", "core.js", "README.md"} <= set(files)
    cfg = _blob(hub, SPACE, "hub_config.js", "space").decode()
    r = hub.repos[f"dataset:{REPO}"]
    want = {"endpoint": hub.url, "repo": REPO, "revision": r["branches"]["main"], "index": 1}
    assert json.loads(cfg.split("=", 1)[1].strip().rstrip(";")) == want
    assert "sdk: static" in _blob(hub, SPACE, "README.md", "space").decode()
    assert hub.repos[f"space:{SPACE}"]["sdk"] == "static"


def test_space_command_updates_an_existing_space(hub, pushed, tmp_path):
    """`hub space` on its own: another Space for the same dataset, at a named revision."""
    sha = hub.repos[f"dataset:{REPO}"]["branches"]["main"]
    args = ["space", "alice/viewer2", "--dataset", REPO, "--revision", sha]
    proc = run_child(hub, tmp_path / "space", args)
    assert proc.stdout.strip() == f"{hub.url}/spaces/alice/viewer2"
    assert sha in _blob(hub, "alice/viewer2", "hub_config.js", "space").decode()


# --- the page in Chromium -----------------------------------------------------------------------


class HostedPage(Page):
    """A Page on the hosted viewer, at `url` (the Space's host, or a file with ?hub=)."""

    def __init__(self, browser, url: str, artifacts):
        super().__init__(browser, {"save_path": "/"}, artifacts)
        self.url = url

    def fetched(self) -> int:
        return int(self.page.locator("#hub-fetched").get_attribute("data-bytes") or 0)


@pytest.fixture
def disk_page(browser, hub, pushed, tmp_path, artifacts):
    from lens_cache.hub import write_hosted_page

    url = write_hosted_page(tmp_path / "page", hub.url, REPO)
    pg = HostedPage(browser, url, artifacts)
    yield pg
    pg.page.close()


def _check_head(pg, store, h: str, layer: int, head: int) -> None:
    """The head's hover values are the pushed float32 values, to the six digits printed."""
    wait_head(pg, store["model"], h, layer, head)
    pat = npz_layer(store["path"], store["model"], h, layer)[head]
    for i, j in [(1, 0), (3, 1), (4, 4)]:
        text = hover_cell(pg, i, j)
        assert value_line(text) == f"value {js_to_precision(float(pat[i, j]))}", (i, j, text)


def test_space_page_browses_from_its_own_host(browser, hub, store, pushed, artifacts):
    pg = HostedPage(browser, hub.static_url(SPACE), artifacts)
    try:
        pg.open("#/")
        assert f"{len(PROMPTS)} of {len(PROMPTS)} prompts" in pg.page.locator("#app").text_content()
        h = store["hashes"][PROMPTS[0]["text"]]
        pg.open(f"#/prompt/{store['model']}/{h}")
        pg.page.wait_for_selector(".grid canvas, .heads canvas, canvas")
        _check_head(pg, store, h, 0, 2)
        _check_head(pg, store, h, 2, 0)
        assert 0 < pg.fetched() < 200_000
        pg.shot("hosted-space-head")
        assert pg.errors == [] and pg.dialogs == []
        hosts = {u.split("/")[2] for u in pg.requests}
        assert hosts <= {hub.static_url(SPACE).split("/")[2], hub.url.split("/")[2]}
    finally:
        pg.page.close()


def test_disk_page_with_hub_parameter(disk_page, store):
    pg = disk_page
    h = store["hashes"][PROMPTS[2]["text"]]
    _check_head(pg, store, h, 0, 1)
    # opened first: the index, the prompt's page data, and for each of the layer's two pushed
    # heads one read of its shard's header and one of its pattern
    assert pg.page.locator("#hub-fetched").get_attribute("data-requests") == "6"
    assert "not pushed: predictions" in pg.page.locator("#hub-notes").text_content()
    pg.open(f"#/head/{store['model']}/{h}/0/0")  # a head the push left out
    pg.page.wait_for_selector(".hub-not-pushed")
    assert "--heads 0.1,0.2,2.0,0.0 adds it" in pg.page.locator(".hub-not-pushed").text_content()
    assert pg.errors == [] and pg.dialogs == []


def test_xss_prompt_stays_text_on_the_hosted_page(disk_page, store):
    pg = disk_page
    h = store["hashes"][XSS_TEXT]
    pg.open(f"#/prompt/{store['model']}/{h}")
    pg.page.wait_for_selector(".prompt-text")
    assert pg.page.locator(".prompt-text").text_content() == XSS_TEXT
    pg.open("#/?q=onerror")
    pg.page.wait_for_selector(".vrow")
    assert "<img src=x onerror=alert(1)>" in pg.page.locator(".vrow").first.text_content()
    assert pg.page.locator("#app img").count() == 0
    assert pg.dialogs == [] and pg.errors == []


# --- a hostile or unreadable dataset --------------------------------------------------------------

LIE_HEAD = (0, 1)


def _clone(hub, dst: str, **change) -> None:
    """Copy the pushed dataset to `dst` on the server, its head commit changed: `files` maps a
    path to new bytes (None: removed); `private` makes it private."""
    import copy

    repo = copy.deepcopy(hub.repos[f"dataset:{REPO}"])
    repo["id"], repo["private"] = dst, change.get("private", False)
    files = repo["commits"][repo["branches"]["main"]]["files"]
    for path, data in change.get("files", {}).items():
        if data is None:
            del files[path]
        else:
            files[path] = {
                "sha256": hub.blobs.put(data),
                "size": len(data),
                "lfs": True,
                "oid": "0",
            }
    hub.repos[f"dataset:{dst}"] = repo


def _lying_shard(data: bytes, lie: str, h: str) -> bytes:
    """The shard `data` with its header telling the lie named, about prompt `h` (its bytes kept)."""
    n = int.from_bytes(data[:8], "little")
    header, body = json.loads(data[8 : 8 + n]), data[8 + n :]
    entry = header[h]
    a, b = entry["data_offsets"]
    if lie == "malformed":
        text = b"{not json" + b" " * (n - 9)
        return data[:8] + text + body
    if lie == "past the end":
        entry["data_offsets"] = [a, len(body) + 4]
    elif lie == "overlap":  # the last entry moved back onto the one before it
        last = max(
            (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"]
        )
        x, y = header[last]["data_offsets"]
        header[last]["data_offsets"] = [x - 4, y - 4]
    elif lie == "shape":
        entry["shape"] = [entry["shape"][0], entry["shape"][1] + 1]
    elif lie == "flat":  # its bytes right, but not a pattern
        entry["shape"] = [entry["shape"][0] * entry["shape"][1]]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + body


@pytest.mark.parametrize(
    "lie, reason",
    [
        ("malformed", "malformed header"),
        ("past the end", "past the end of the file"),
        ("overlap", "overlap"),
        ("shape", "shape does not match its bytes"),
        ("flat", "is not a [T, T] pattern"),
    ],
)
def test_lying_shard_is_named_and_nothing_from_it_shown(
    browser, hub, store, pushed, tmp_path, artifacts, lie, reason
):
    from lens_cache.hub import write_hosted_page

    model, h = store["model"], store["hashes"][PROMPTS[0]["text"]]
    layer, head = LIE_HEAD
    path = f"tensors/{model}/patterns/layer_{layer:02d}/head_{head:02d}-00000.safetensors"
    dst = "alice/lie-" + lie.replace(" ", "-")
    _clone(hub, dst, files={path: _lying_shard(_blob(hub, REPO, path), lie, h)})
    pg = HostedPage(browser, write_hosted_page(tmp_path, hub.url, dst), artifacts)
    try:
        pg.open(f"#/head/{model}/{h}/{layer}/{head}")
        pg.page.wait_for_selector(".hub-bad-shard")
        text = pg.page.locator(".hub-bad-shard").text_content()
        assert f"shard {path}: " in text and reason in text and "nothing from it" in text
        assert pg.page.locator(".pane[data-draw-ms]").count() == 0
        assert path in pg.page.locator("#app").text_content()  # the view says so too
    finally:
        pg.page.close()


@pytest.mark.parametrize(
    "change, want",
    [
        ({"private": True}, "it is private, or not there. This page never asks for a token"),
        (
            {"files": {"viewer/index.json": None}},
            "was pushed by an older lens_cache, without the hosted viewer's index: upgrade "
            "(pip install -U lens_cache) and push it again with the same selection "
            "(lens-cache hub push --repo alice/closed-1 ...; only the index goes up)",
        ),
    ],
)
def test_unreadable_dataset_says_how_to_open_it(
    browser, hub, pushed, tmp_path, artifacts, change, want
):
    from lens_cache.hub import write_hosted_page

    dst = "alice/closed-" + str(len(change.get("files", {})))
    _clone(hub, dst, **change)
    pg = HostedPage(browser, write_hosted_page(tmp_path, hub.url, dst), artifacts)
    try:
        pg.open("#/")
        text = pg.page.locator("#hub-refused").text_content()
        assert want in text and f"lens-cache hub pull --repo {dst}" in text
    finally:
        pg.page.close()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_shards_decode_exactly(
    browser, hub, store, pushed, tmp_path, artifacts, dtype
):
    """Pushed in float16 or bfloat16, a hover shows the pushed (rounded) value exactly."""
    from lens_cache.hub import write_hosted_page

    dst = f"alice/hosted-{dtype}"
    args = ["push", "--repo", dst, "-s", store["path"], "--heads", "2.0", "--dtype", dtype]
    run_child(hub, tmp_path / "push", args)
    pg = HostedPage(browser, write_hosted_page(tmp_path / "page", hub.url, dst), artifacts)
    try:
        h, model = store["hashes"][PROMPTS[0]["text"]], store["model"]
        wait_head(pg, model, h, 2, 0)
        pat = torch.from_numpy(npz_layer(store["path"], model, h, 2)[0])
        pushed_values = pat.to(getattr(torch, dtype)).float()
        assert not torch.equal(pushed_values, pat)  # the rounding shows in what is checked
        for i, j in [(1, 0), (3, 1), (5, 2)]:
            text = hover_cell(pg, i, j)
            want = f"value {js_to_precision(float(pushed_values[i, j]))}"
            assert value_line(text) == want, (i, j, text)
        assert pg.errors == []
    finally:
        pg.page.close()


def test_view_hub_writes_the_page_and_prints_its_address(tmp_path, monkeypatch):
    from lens_cache.cli import view

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "out.txt"
    with out.open("w") as f, contextlib.redirect_stdout(f):
        assert view.main(["--hub", "alice/some-ds", "--endpoint", "http://127.0.0.1:9"]) == 0
    page = tmp_path / "cache" / "lens_cache" / "hosted" / "index.html"
    want = page.as_uri() + "?hub=alice/some-ds&endpoint=http://127.0.0.1:9"
    assert out.read_text().strip() == want
    html = page.read_text()
    assert "connect-src http://127.0.0.1:9 https:;" in html
    assert '<script src="hub_source.js"></script>' in html
    cfg = (page.parent / "hub_config.js").read_text()
    assert '"repo": "alice/some-ds"' in cfg and '"revision": "main"' in cfg


def test_predictions_and_logit_lens_on_the_hosted_page(
    browser, hub, prediction_store, tmp_path, artifacts
):
    """Pushed with predictions and the logit lens: the token strip's and the lens's tooltips
    are the stored values (read with the reader, not from the page's data)."""
    from lens_cache.hub import write_hosted_page

    s, dst = prediction_store, "alice/hosted-predictions"
    args = ["push", "--repo", dst, "-s", s["save_path"], "-m", s["model"]]
    run_child(hub, tmp_path / "push", args + ["--kinds", "patterns", "predictions", "logit_lens"])
    pg = HostedPage(browser, write_hosted_page(tmp_path / "page", hub.url, dst), artifacts)
    try:
        pg.open(f"#/lens/{s['model']}/{s['hash']}")
        pg.page.wait_for_selector(".lens-scroller[data-drawn]")
        for li, i in [(0, 2), (1, 7)]:
            pg.page.mouse.move(*chromium_point(pg.page, LENS_POINT, li, i))
            tip = f"layer {li}, position {i}:"
            pg.page.wait_for_function(
                f"document.getElementById('tip').textContent.startsWith({tip!r})"
            )
            check_lens_tip(pg.page.locator("#tip").text_content(), s, li, i)
        pg.open(f"#/head/{s['model']}/{s['hash']}/1/0")
        pg.page.wait_for_selector(".tokens.scored .tok")
        for i in (1, 4):
            pg.page.mouse.move(*chromium_point(pg.page, TOKEN_POINT, i))
            tip = f"position {i}:"
            pg.page.wait_for_function(
                f"document.getElementById('tip').textContent.startsWith({tip!r})"
            )
            check_token_tip(pg.page.locator("#tip").text_content(), s, i)
        assert (
            "not pushed: head_contributions, resid_post"
            in pg.page.locator("#hub-notes").text_content()
        )
        assert pg.errors == []
    finally:
        pg.page.close()


def test_top_examples_on_the_hosted_page(browser, hub, heads_store, tmp_path, artifacts):
    """Pushed with head contributions: the top-examples page lists the cells a brute-force scan
    of the store finds, for each ranking."""
    from lens_cache.hub import write_hosted_page

    s, dst = heads_store, "alice/hosted-heads"
    model, layer, head = s["other"], 1, 3
    args = ["push", "--repo", dst, "-s", s["save_path"], "-m", model]
    run_child(hub, tmp_path / "push", args + ["--kinds", "patterns", "head_contributions"])
    pg = HostedPage(browser, write_hosted_page(tmp_path / "page", hub.url, dst), artifacts)
    tokens = {r["hash"]: r["tokens"] for r in s["store"].prompts(model)}
    try:
        for by in ("attention", "value_weighted", "dla"):
            pg.open(f"#/top/{model}/{layer}/{head}?by={by}")
            pg.page.wait_for_selector(".top-row")
            want = brute_force_top(s["store"], model, layer, head, by, 32)
            check_top_rows(pg.page.evaluate(TOP_ROWS), want, tokens.get)
        assert pg.errors == []
    finally:
        pg.page.close()
