"""The viewer's prediction features in Chromium from file://, on conftest's `prediction_store`
(a real export of both tiny models with logits and the logit lens): the home table sorts and
filters by the stored mean loss, the logit lens's colour switch recolours the cells by the other
stored quantity, and the head view's token strip shows each position's stored loss. Every
expected number is read from the store (`lens_cache.open`), not from the viewer's data."""

import math

import pytest

import lens_cache
from tests.browser import LENS_POINT, TOKEN_POINT, Page, check_lens_tip, chromium_point

pytestmark = pytest.mark.browser

ROWS = """() => [...document.querySelectorAll('.vrow:not([hidden])')]
  .sort((a, b) => a.dataset.idx - b.dataset.idx)
  .map((r) => [r.children[0].textContent, r.title])"""


def stored_losses(save) -> dict[tuple[str, str], float]:
    """(model, text) -> the mean loss each prompt record carries."""
    store = lens_cache.open(save)
    return {(m, r["text"]): r["mean_loss"] for m in store.models() for r in store.prompts(m)}


def shown_rows(pg) -> list[tuple[str, str]]:
    return [tuple(r) for r in pg.evaluate(ROWS)]


def test_home_sorts_and_filters_by_mean_loss(browser, prediction_store, artifacts):
    page = Page(browser, prediction_store, artifacts)
    pg, losses = page.page, stored_losses(prediction_store["save_path"])
    by_loss = sorted(losses, key=losses.get)
    assert len(by_loss) == 4 and len(set(losses.values())) == 4
    page.open("#/")
    pg.locator('.vhead [data-key="loss"]').click()  # a metric column sorts descending first
    pg.wait_for_function("location.hash.includes('sort=loss')")
    assert shown_rows(pg) == by_loss[::-1]
    pg.locator('.vhead [data-key="loss"]').click()
    pg.wait_for_function("location.hash.includes('dir=asc')")
    assert shown_rows(pg) == by_loss
    cut = (losses[by_loss[1]] + losses[by_loss[2]]) / 2  # strictly between two stored losses
    pg.locator("input.min-loss").fill(f"{cut:.6f}")
    pg.wait_for_function("location.hash.includes('minloss=')")
    assert shown_rows(pg) == [k for k in by_loss if losses[k] >= cut] == by_loss[2:]
    page.check_clean()
    pg.close()


LENS_PIXEL = """([li, i]) => { const s = document.querySelector('.lens-scroller'), d = s.dataset;
  const c = document.querySelector('.lens-canvas');
  const x = +d.labelW + i * +d.cellW - s.scrollLeft + 1;
  const y = +d.headH + li * +d.cellH - s.scrollTop + 1;
  return [...c.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)]; }"""
VIRIDIS_AT = """(v) => LENS_UI.rgb(LENS_UI.colorIndex(v, 'linear'))"""


def expected_colour(pg, p: float) -> list[int]:
    """The colour-map entry of probability `p` (the viewer's colour map; `p` is from the store)."""
    css = pg.evaluate(VIRIDIS_AT, p)
    return [int(x) for x in css[4:-1].split(",")]


def test_lens_colour_switch_shows_the_other_stored_probability(
    browser, prediction_store, artifacts
):
    page = Page(browser, prediction_store, artifacts)
    pg, s = page.page, prediction_store
    lens = s["lens"]
    page.open(f"#/lens/{s['model']}/{s['hash']}")
    pg.wait_for_selector(".lens-scroller[data-drawn='target']")
    cells = [(0, 2), (1, 7)]
    for li, i in cells:
        p_actual = math.exp(-float(lens["loss"][li][i]))
        assert pg.evaluate(LENS_PIXEL, [li, i]) == expected_colour(pg, p_actual)
    pg.keyboard.press("s")
    pg.wait_for_selector(".lens-scroller[data-drawn='top']")
    assert "colour=top" in pg.evaluate("location.hash")
    for li, i in cells:
        p_top = math.exp(float(lens["top_logprobs"][li][i][0]))
        p_actual = math.exp(-float(lens["loss"][li][i]))
        assert expected_colour(pg, p_top) != expected_colour(pg, p_actual)  # a real change
        assert pg.evaluate(LENS_PIXEL, [li, i]) == expected_colour(pg, p_top)
        pg.mouse.move(*chromium_point(pg, LENS_POINT, li, i))
        pg.wait_for_function(
            f"document.getElementById('tip').textContent.startsWith('layer {li}, position {i}:')"
        )
        check_lens_tip(pg.locator("#tip").text_content(), s, li, i)
    page.check_clean()
    pg.close()


def test_head_view_token_strip_shows_each_stored_loss(browser, prediction_store, artifacts):
    page = Page(browser, prediction_store, artifacts)
    pg, s = page.page, prediction_store
    store = lens_cache.open(s["save_path"])
    (record,) = [r for r in store.prompts(s["model"]) if r["hash"] == s["hash"]]
    loss = store.predictions(s["model"], record["text"])["loss"]
    page.open(f"#/head/{s['model']}/{s['hash']}/1/0")
    pg.wait_for_selector(".tokens.scored .tok")
    for i in (1, 4, len(record["tokens"]) - 1):
        pg.mouse.move(*chromium_point(pg, TOKEN_POINT, i))
        pg.wait_for_function(
            f"document.getElementById('tip').textContent.startsWith('position {i}:')"
        )
        tip = pg.locator("#tip").text_content()
        assert f"loss {float(loss[i - 1]):.4f}" in tip, (i, tip)
    page.check_clean()
    pg.close()
