"""The hosted viewer in Firefox: the page opened from disk with ?hub=, reading the dataset from
the test Hub server on 127.0.0.1 (tests/test_viewer_firefox.py starts Firefox; the dataset is
tests/test_hub_hosted.py's). Values are checked against the store's activations.npz."""

from __future__ import annotations

import pytest

from lens_cache.synthetic import XSS_TEXT
from tests.browser import js_to_precision, value_line
from tests.helpers import npz_layer
from tests.test_hub_hosted import PROMPTS, REPO, pushed, store  # noqa: F401 (fixtures)
from tests.test_viewer_firefox import ff, firefox, hover_cell, js, wait  # noqa: F401 (fixtures)


@pytest.fixture
def page_url(hub, pushed, tmp_path):  # noqa: F811 (the imported fixture)
    from lens_cache.hub import write_hosted_page

    return write_hosted_page(tmp_path / "page", hub.url, REPO)


@pytest.mark.browser
def test_hosted_page_from_disk_in_firefox(ff, store, page_url):  # noqa: F811
    model = store["model"]
    ff.navigate(page_url + "#/")
    wait(ff, "document.querySelector('.vrow')")
    assert js(ff, "document.querySelector('.toolbar .note').textContent") == "3 of 3 prompts"
    rows = js(ff, "[...document.querySelectorAll('.vrow:not([hidden])')].map(r => r.textContent)")
    assert any(XSS_TEXT.split(" </")[0] in r for r in rows)
    assert js(ff, "document.querySelectorAll('#app img').length") == 0
    h = store["hashes"][PROMPTS[0]["text"]]
    ff.navigate(page_url + f"#/head/{model}/{h}/2/0")
    wait(ff, "document.querySelector('.pane[data-draw-ms]')")
    pat = npz_layer(store["path"], model, h, 2)[0]
    for i, j in [(1, 0), (3, 1), (4, 4)]:
        text = hover_cell(ff, i, j)
        assert value_line(text) == f"value {js_to_precision(float(pat[i, j]))}", (i, j, text)
    assert int(js(ff, "document.getElementById('hub-fetched').dataset.bytes")) > 0
