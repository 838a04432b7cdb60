"""What the inline-view browser tests share: a Chromium page opened from file:// with every
request off the machine refused, the inline displays (iframes) on it, and hovering a cell of
one display's head view."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.browser import shown_value, value_line


class OfflinePage:
    """A page on an HTML file, with the network blocked, recording errors, requests, dialogs."""

    def __init__(self, browser, path: Path):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.errors, self.requests, self.dialogs = [], [], []
        self.context.route("**/*", self._only_local)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(Path(path).as_uri())

    def _only_local(self, route):
        url = route.request.url
        self.requests.append(url)
        if url.startswith(("file:", "data:", "about:")):
            route.continue_()
        else:
            route.abort()

    def displays(self, n: int) -> list:
        """The page's `n` inline displays (their frames), each once its view is drawn."""
        self.page.wait_for_function(
            f"document.querySelectorAll('iframe.lens-cache-view').length >= {n}"
        )
        frames = [f for f in self.page.frames if f.url.startswith("about:srcdoc")]
        assert len(frames) == n, [f.url for f in self.page.frames]
        for frame in frames:
            frame.wait_for_selector("#app > :not(#boot-note)")
        return frames

    def check_clean(self) -> None:
        assert self.errors == [], f"console errors: {self.errors}"
        outside = [u for u in self.requests if not u.startswith(("file:", "data:", "about:"))]
        assert outside == [], f"requests off the machine: {outside}"
        assert self.dialogs == [], f"a dialog fired: {self.dialogs}"

    def close(self) -> None:
        self.context.close()


def open_views(browser, folder: Path, *views) -> OfflinePage:
    """The displays, one after another, on a page as a notebook's output shows them."""
    path = Path(folder) / "views.html"
    path.write_text(f"<!doctype html><body>{''.join(v._repr_html_() for v in views)}</body>")
    return OfflinePage(browser, path)


def hover_cell(page, frame, i: int, j: int) -> str:
    """Move the mouse onto cell (query i, key j) of a display's head view; return its tooltip.

    The pointer is steered by what the tooltip names: at a few pixels a cell (256 tokens fitted
    into a notebook's width) rounding can land it one cell off, and a view may still be fitting
    its zoom when it first reports drawn. The value shown is then checked exactly.
    """
    frame.wait_for_selector(".pane[data-draw-ms]")
    frame.frame_element().scroll_into_view_if_needed()  # the display, in the notebook's page
    row, col = i, j  # where to aim, corrected by where the last move landed
    for _ in range(20):
        scroller = frame.locator(".scroller").first
        cs = float(scroller.get_attribute("data-cell"))
        box = scroller.bounding_box()  # in the top page's coordinates, iframe offset included
        left, top = scroller.evaluate("e => [e.scrollLeft, e.scrollTop]")
        page.mouse.move(box["x"] + (col + 0.5) * cs - left, box["y"] + (row + 0.5) * cs - top)
        frame.wait_for_selector("#tip:not([hidden])")
        text = frame.locator("#tip").text_content()
        landed = re.search(r"query (\d+):.*\nkey +(\d+):", text)
        if landed and (int(landed[1]), int(landed[2])) == (i, j):
            return text
        if landed:
            row, col = row + i - int(landed[1]), col + j - int(landed[2])
        page.wait_for_timeout(50)
    raise AssertionError(f"the tooltip never named cell ({i}, {j}): {text!r}")


def check_two_head_views(pg: OfflinePage, first, second) -> None:
    """Two displays, each `(frame, its head's pattern [T, T], a cell (i, j))`: hovering the
    cell shows the pattern's value as the viewer prints its float16, and an arrow key moves
    only the display that has the focus."""
    for frame, pattern, (i, j) in (first, second):
        assert value_line(hover_cell(pg.page, frame, i, j)) == shown_value(pattern[i, j])
    for key, (frame, _, _), (other, _, _) in (
        ("ArrowRight", first, second),
        ("ArrowDown", second, first),
    ):
        before, still = frame.evaluate("location.hash"), other.evaluate("location.hash")
        frame.locator(".scroller").first.click()
        pg.page.keyboard.press(key)
        frame.wait_for_function(f"location.hash !== {json.dumps(before)}")
        assert other.evaluate("location.hash") == still
