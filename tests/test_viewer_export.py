"""The viewer on a real export: what the exporter wrote is what the page shows."""

import pytest

from lens_cache import export
from lens_cache.prompts import prompt_hash
from tests.browser import Page, hover_cell, shown_value, small_cells, value_line, wait_head
from tests.helpers import npz_layer

XSS = "<img src=x onerror=alert(1)> </script> \"quoted\" & 'single'"
TEXTS = [
    "The cat sat on the mat. The cat sat on the mat.",
    "def add(a, b):\n    return a + b",
    XSS,
]


@pytest.fixture(scope="module")
def exported(gqa_model, tmp_path_factory):
    save = tmp_path_factory.mktemp("viewer-export")
    export(gqa_model, prompts=TEXTS, save_path=save, quiet=True)
    return {"save_path": save, "model": gqa_model}


@pytest.fixture
def page(browser, exported, tmp_path):
    p = Page(browser, exported, tmp_path)
    yield p
    p.page.close()
    p.check_clean()


@pytest.mark.browser
def test_home_lists_every_exported_prompt(page, exported):
    page.open("#/")
    page.page.wait_for_selector("text=The cat sat on the mat")
    body = page.page.locator("body").inner_text()
    assert "def add(a, b)" in body
    assert XSS in body  # the markup shows as text
    assert page.page.locator("img").count() == 0
    page.shot("export-home")


@pytest.mark.browser
def test_hover_equals_the_stored_npz(page, exported):
    model, save = exported["model"], exported["save_path"]
    h = prompt_hash(TEXTS[0])
    wait_head(page, model.name, h, 2, 1)
    pattern = npz_layer(save, model.name, h, 2)[1]
    n = pattern.shape[0]
    for i, j in [*small_cells(pattern, limit=n), (n - 1, n - 1)]:
        assert value_line(hover_cell(page, i, j)) == shown_value(pattern[i, j]), (i, j)
    page.shot("export-head")
