"""What the browser tests share: the guard that fails them where browsers are required, a
Chromium page that records errors and requests, hovering a head's cell, and what its tooltip
must say."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import NoReturn

import pytest

from tests.helpers import npz_layer

REQUIRE_BROWSERS = "LENS_CACHE_REQUIRE_BROWSERS"


def browsers_required() -> bool:
    """`make test` (and so CI) sets LENS_CACHE_REQUIRE_BROWSERS=1: there every browser test must
    run. A bare `pytest` on a machine without the browsers skips them instead."""
    return os.environ.get(REQUIRE_BROWSERS, "") not in ("", "0") or bool(os.environ.get("CI"))


def missing_browser(why: str, install: str) -> NoReturn:
    """Skip a browser test whose browser or driver is missing, or fail it where browsers are
    required, so a CI run can never pass with its browser tests skipped."""
    if browsers_required():
        pytest.fail(f"{why}, and {REQUIRE_BROWSERS}=1 requires the browser tests ({install})")
    pytest.skip(f"{why}; `make test` installs it ({install})")


# --- what the viewer shows ---------------------------------------------------------------------


def js_to_precision(x: float, digits: int = 6) -> str:
    """JavaScript's `Number(x).toPrecision(digits)`: the nearest `digits`-digit decimal (ties
    away from zero), in fixed notation unless the exponent is below -6 or at least `digits`."""
    from decimal import ROUND_HALF_UP, Decimal

    d = abs(Decimal(x))  # the exact binary value
    e = d.adjusted()
    mantissa = d.scaleb(-e).quantize(Decimal(1).scaleb(1 - digits), rounding=ROUND_HALF_UP)
    if mantissa >= 10:
        mantissa, e = mantissa.scaleb(-1).quantize(Decimal(1).scaleb(1 - digits)), e + 1
    sign, ds = "-" if x < 0 else "", str(mantissa).replace(".", "")
    if e < -6 or e >= digits:
        return f"{sign}{ds[0]}.{ds[1:]}e{'+' if e >= 0 else '-'}{abs(e)}"
    if e < 0:
        return f"{sign}0.{'0' * (-e - 1)}{ds}"
    return sign + ds[: e + 1] + (f".{ds[e + 1 :]}" if e + 1 < digits else "")


def shown_value(stored: float) -> str:
    """The tooltip's value line for a stored pattern value: the viewer holds it as float16 and
    prints six significant digits (web/core.js `fmtValue`)."""
    import numpy as np

    half = float(np.float16(stored))
    return "value 0" if half == 0 else f"value {js_to_precision(half)}"


def small_cells(pattern, limit: int, n: int = 3) -> list[tuple[int, int]]:
    """`n` cells (query i, key j < i) of the lower triangle within the first `limit` rows with the
    smallest non-zero values: where a value read from a colour or rounded too coarsely shows."""
    import numpy as np

    rows, cols = np.tril_indices(min(limit, pattern.shape[0]), k=-1)
    values = pattern[rows, cols]
    order = [k for k in np.argsort(values, kind="stable") if values[k] > 0][:n]
    return [(int(rows[k]), int(cols[k])) for k in order]


# --- a Chromium page ---------------------------------------------------------------------------


class Page:
    """A page on the store's index.html that records errors, requests and dialogs."""

    def __init__(self, browser, store, artifacts):
        self.page = browser.new_page(viewport={"width": 1280, "height": 800})
        self.url = Path(store["save_path"], "index.html").as_uri()
        self.artifacts = artifacts
        self.errors, self.requests, self.dialogs = [], [], []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", self.on_dialog)

    def on_dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, fragment: str = ""):
        self.page.goto(self.url + fragment)
        self.page.wait_for_selector("#app > :not(#boot-note)")

    def shot(self, name: str):
        self.page.screenshot(path=str(self.artifacts / f"{name}.png"))

    def check_clean(self):
        assert self.errors == [], f"console errors: {self.errors}"
        outside = [u for u in self.requests if not u.startswith("file://")]
        assert outside == [], f"requests outside file://: {outside}"
        assert self.dialogs == [], f"a dialog fired: {self.dialogs}"


def wait_head(pg, model, h, layer, head):
    """Open a head and wait until its canvas has been drawn."""
    pg.open(f"#/head/{model}/{h}/{layer}/{head}")
    pg.page.wait_for_selector(".pane[data-draw-ms]")


def hover_cell(pg, i: int, j: int, scroller: str = ".scroller") -> str:
    """Move the mouse onto cell (query i, key j) from the canvas geometry; return the tooltip."""
    s = pg.page.locator(scroller).first
    cs = float(s.get_attribute("data-cell"))
    box = s.bounding_box()
    left, top = s.evaluate("e => [e.scrollLeft, e.scrollTop]")
    pg.page.mouse.move(box["x"] + (j + 0.5) * cs - left, box["y"] + (i + 0.5) * cs - top)
    pg.page.wait_for_selector("#tip:not([hidden])")
    return pg.page.locator("#tip").text_content()


def value_line(text: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith("value ")]
    return line


def check_hover(hover, save, model: str, h: str, layer: int, head: int) -> None:
    """`hover(i, j)` (the tooltip's text over cell i, j) shows the stored value exactly as the
    viewer prints its float16, at the cells with the smallest values and on the diagonal, and
    both tokens; a cell above the diagonal shows as masked."""
    pat = npz_layer(save, model, h, layer)[head]
    tokens = json.loads((save / model / "prompts" / h / "prompt.json").read_text())["tokens"]
    cells = small_cells(pat, limit=25)
    assert len(cells) == 3 and all(pat[i, j] < 0.05 for i, j in cells)
    for i, j in [*cells, (24, 24)]:
        text = hover(i, j)
        assert value_line(text) == shown_value(pat[i, j]), (i, j, text)
        assert f"query {i}: {json.dumps(tokens[i])}" in text
        assert f"key   {j}: {json.dumps(tokens[j])}" in text
    assert "masked" in hover(3, 9)


# --- predictions: the token strip and the logit lens ------------------------------------------


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


# Functions of one array, for either browser's evaluate: the centre of drawn heat-map cell
# [layer, head, n_layers, n_heads] in client pixels, from the canvas's drawn content box (CSS
# may stretch it), and a forced drawn width, as a page zoom or another layout would give.
HEAT_CENTRE_JS = """a => {
  const c = document.querySelector('.heat canvas'), b = c.getBoundingClientRect();
  return [b.left + c.clientLeft + (a[1] + 0.5) * c.clientWidth / a[3],
          b.top + c.clientTop + (a[0] + 0.5) * c.clientHeight / a[2]]; }"""
HEAT_RESIZE_JS = "w => { document.querySelector('.heat canvas').style.width = w + 'px'; }"
HEAT_CELLS = [(0, 0), (0, 1), (1, 0), (2, 1), (5, 7), (11, 11), (10, 3), (3, 10)]


def check_heat_pointer(hover, resize, n_layers: int, n_heads: int) -> None:
    """`hover(layer, head)` moves onto the centre of a drawn cell and returns the tooltip:
    it names that head, at the drawn size and at two forced widths."""
    cells = [(li, hd) for li, hd in HEAT_CELLS if li < n_layers and hd < n_heads]
    for width in (None, 37 * n_heads, 9 * n_heads):
        if width:
            resize(width)
        for li, hd in cells:
            assert hover(li, hd).startswith(f"L{li} H{hd}\n"), (width, li, hd)


# --- head contributions: value-weighted hover, DLA row and grid, top examples -----------------
# Expressions in Marionette style (reading `arguments`); Chromium runs them via chromium_point.

DLA_TOKEN_POINT = """(r => [r.left + r.width / 2, r.top + r.height / 2])
  (document.querySelectorAll('.tokens.dla .tok')[arguments[0]].getBoundingClientRect())"""
DLA_CELL_POINT = """(r => [r.left + r.width / 2, r.top + r.height / 2])
  (document.querySelector(`.dla-cell[data-layer="${arguments[0]}"][data-head="${arguments[1]}"]`)
   .getBoundingClientRect())"""
TOP_ROWS = """[...document.querySelectorAll('.top-row')].map(r => [r.dataset.hash, +r.dataset.query,
  +r.dataset.key, r.children[1].textContent,
  (r.querySelector('.tok.q') || {}).textContent, (r.querySelector('.tok.k') || {}).textContent])"""


def js_value(x: float) -> str:
    """web/core.js `fmtValue`: 0, else six significant digits."""
    return "0" if x == 0 else js_to_precision(x)


def weighted_line(text: str, name: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return line[len(name) + 1 :]


def check_weighted_tip(text: str, pattern, norms, i: int, j: int) -> None:
    """A value-weighted hover: the stored attention as float16, the stored ‖v_j W_O‖, and their
    product as the page computes it (float16 attention times the float32 norm), 6 digits."""
    import numpy as np

    a, n = float(np.float16(pattern[i, j])), float(np.float32(norms[j]))
    assert value_line(text) == shown_value(pattern[i, j]), text
    assert weighted_line(text, "‖v W_O‖") == js_value(n), text
    assert weighted_line(text, "value-weighted") == js_value(a * n), text


def check_dla_tip(text: str, tokens: list[str], dla, i: int, prefix: str = "") -> None:
    """The DLA shown at position i (toward tokens[i + 1]) is the stored float32 value."""
    assert text.startswith(f"{prefix}position {i}: {json.dumps(tokens[i])}"), text
    if i + 1 < len(tokens):
        assert f"→ next {json.dumps(tokens[i + 1])}" in text, text
        assert weighted_line(text.splitlines()[-1], "DLA") == js_value(float(dla[i])), text
    else:
        assert "no next token" in text, text


def check_top_rows(rows: list, want: list[tuple], tokens_of) -> None:
    """The top-examples page lists `want` (brute-force ``(-value, hash, query, key)``) in order,
    each value as stored (6 digits) and its query and key tokens marked in the snippet."""
    assert [(r[0], r[1], r[2]) for r in rows] == [(h, q, k) for _, h, q, k in want]
    for (h, q, k, value, qtok, ktok), w in zip(rows, want, strict=True):
        assert value == js_value(-w[0])
        tokens = tokens_of(h)
        assert qtok == tokens[q]
        assert ktok == (tokens[k] if k >= 0 else None)
