"""The viewer's prediction views on a real export (tiny GPT-2-shaped model, logits and logit
lens): the token strip's hover and the logit-lens hover show the stored numbers, in Chromium
(Playwright) and Firefox (Marionette), from file://, with no console errors."""

import math
import re

import pytest

import lens_cache
from lens_cache import export
from lens_cache.prompts import prompt_hash
from lens_cache.viewer import write_viewer
from tests.test_viewer import Page, browser, quiet  # noqa: F401 (fixture)
from tests.test_viewer_firefox import ff, firefox, js, open_view, wait  # noqa: F401 (fixtures)

TEXT = "The cat sat on the mat. The cat sat on the mat again, and then it slept."


@pytest.fixture(scope="module")
def lens_store(gpt2_model, gqa_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("pred-store")
    hooks = ["pattern", "logits", "logit_lens"]
    export(
        [gpt2_model, gqa_model],
        prompts=[TEXT, "Short one."],
        save_path=path,
        hooks=hooks,
        quiet=True,
        index_html=False,
    )
    write_viewer(path, log=quiet)
    store = lens_cache.open(path)
    name = gpt2_model.name
    return {
        "save_path": path,
        "model": name,
        "hash": prompt_hash(TEXT),
        "tokens": store.prompt(name, TEXT)["tokens"],
        "pred": store.predictions(name, TEXT),
        "lens": store.logit_lens(name, TEXT),
        "vocab": store.vocab(name),
        "other": gqa_model.name,
        "other_loss": store.predictions(gqa_model.name, TEXT)["loss"],
    }


def tok_label(t: str, limit: int = 24) -> str:
    """The viewer's tokLabel: whitespace made visible, long tokens shortened."""
    s = t.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "␣")
    return s[: limit - 1] + "…" if len(s) > limit else s


def check_prediction(text: str, fields: dict, at: int, vocab: list[str], rank: bool) -> None:
    """The tooltip's loss, rank and top-k (tokens and probabilities) are the stored ones."""
    loss = float(re.search(r"loss (\S+)", text).group(1))
    assert loss == pytest.approx(float(fields["loss"][at]), abs=1e-4)
    if rank:
        shown = int(re.search(r"^rank (\d+)", text, re.M).group(1))
        assert shown == int(fields["target_rank"][at]) + 1
    rows = re.findall(r"^ *(\d+)\. (.*?) +(\S+)$", text, re.M)
    k = fields["top_ids"].shape[-1]
    assert [int(r[0]) for r in rows] == list(range(1, k + 1)), text
    for (_, token, prob), i, lp in zip(
        rows, fields["top_ids"][at], fields["top_logprobs"][at], strict=True
    ):
        assert token.strip() == tok_label(vocab[int(i)]).strip()
        assert float(prob) == pytest.approx(math.exp(float(lp)), rel=2e-3, abs=2e-6)


def check_token_tip(text: str, s: dict, i: int) -> None:
    assert text.startswith(f"position {i}:"), text
    check_prediction(text, s["pred"], i - 1, s["vocab"], rank=True)


def check_lens_tip(text: str, s: dict, li: int, i: int) -> None:
    assert text.startswith(f"layer {li}, position {i}:"), text
    layer = {name: value[li] for name, value in s["lens"].items()}
    check_prediction(text, layer, i, s["vocab"], rank=False)


LENS_POINT = """(s => { const r = s.getBoundingClientRect(), d = s.dataset;
  return [r.left + (+d.labelW) + (arguments[1] + 0.5) * (+d.cellW) - s.scrollLeft,
          r.top + (+d.headH) + (arguments[0] + 0.5) * (+d.cellH) - s.scrollTop]; })
  (document.querySelector('.lens-scroller'))"""
TOKEN_POINT = """(r => [r.left + r.width / 2, r.top + r.height / 2])
  (document.querySelectorAll('.tokens .tok')[arguments[0]].getBoundingClientRect())"""


def chromium_point(pg, expr: str, *args) -> list[float]:
    """Evaluate a Marionette-style expression (reading `arguments`) in Playwright."""
    return pg.evaluate(f"(args) => (function () {{ return {expr}; }})(...args)", list(args))


@pytest.mark.browser
def test_token_and_lens_hover_in_chromium(browser, lens_store, artifacts):  # noqa: F811
    page = Page(browser, lens_store, artifacts)
    pg, s = page.page, lens_store
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
def test_token_and_lens_hover_in_firefox(ff, lens_store):  # noqa: F811
    s = lens_store
    open_view(ff, s, f"#/prompt/{s['model']}/{s['hash']}")
    wait(ff, "document.querySelector('.tokens.scored .tok')")
    tip = "document.getElementById('tip').textContent"
    for i in (1, 5):
        x, y = js(ff, TOKEN_POINT, i)
        ff.actions.sequence("pointer", "mouse", {"pointerType": "mouse"}).pointer_move(
            round(x), round(y)
        ).perform()
        wait(ff, f"{tip}.startsWith('position {i}:')")
        check_token_tip(js(ff, tip), s, i)
    open_view(ff, s, f"#/lens/{s['model']}/{s['hash']}")
    wait(ff, "document.querySelector('.lens-scroller[data-drawn]')")
    for li, i in ((0, 2), (1, 7)):
        x, y = js(ff, LENS_POINT, li, i)
        ff.actions.sequence("pointer", "mouse", {"pointerType": "mouse"}).pointer_move(
            round(x), round(y)
        ).perform()
        wait(ff, f"{tip}.startsWith('layer {li}, position {i}:')")
        check_lens_tip(js(ff, tip), s, li, i)
