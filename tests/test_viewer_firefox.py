"""The static viewer in Firefox, opened from file:// as a user would, with the network unused.

Playwright can drive only its own patched Firefox, which cannot be downloaded here, so these
tests start Debian's stock `firefox-esr` (`make browser` installs it) with `--marionette` and
talk to it through Mozilla's own client, `marionette-driver` (PyPI): no geckodriver binary,
no Selenium. Firefox runs headless on a fresh profile whose user.js turns off updates,
telemetry, connectivity checks and safe browsing, with MOZ_DISABLE_NONLOCAL_CONNECTIONS=1 so
that nothing it does can leave the machine (under strace it then makes no DNS query or
connection at all). It picks its own Marionette port (`marionette.port` 0) and writes it to
the profile, so parallel runs never collide; its process group is killed at teardown.

JavaScript errors are read from Firefox's console service in the chrome context (hence
`-remote-allow-system-access`): uncaught exceptions, unhandled rejections, failed script
loads and CSP violations of a file:// page all land there, as
`test_error_collector_sees_errors` shows. (The viewer never calls console.*, which this would
not see.) Screenshots go to $LENS_CACHE_ARTIFACTS (or a temporary folder), named firefox-*.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lens_cache.synthetic import SMALL_MODEL, XSS_TEXT, write_store
from lens_cache.viewer import write_viewer
from tests.browser import (
    DLA_TOKEN_POINT,
    HEAT_CENTRE_JS,
    HEAT_RESIZE_JS,
    LENS_POINT,
    TOKEN_POINT,
    TOP_ROWS,
    check_dla_tip,
    check_heat_pointer,
    check_hover,
    check_lens_tip,
    check_token_tip,
    check_top_rows,
    check_weighted_tip,
    missing_browser,
)
from tests.helpers import brute_force_top, quiet

SMALL = SMALL_MODEL.name

try:
    from marionette_driver import Wait
    from marionette_driver.errors import NoAlertPresentException
    from marionette_driver.marionette import Alert, Marionette
except ImportError:  # the firefox fixture skips (or fails, where browsers are required)
    Marionette = None

OFF = """app.update.auto browser.shell.checkDefaultBrowser browser.aboutwelcome.enabled
    datareporting.policy.dataSubmissionEnabled datareporting.healthreport.uploadEnabled
    toolkit.telemetry.enabled network.captive-portal-service.enabled
    network.connectivity-service.enabled browser.safebrowsing.malware.enabled
    browser.safebrowsing.phishing.enabled browser.safebrowsing.downloads.enabled
    browser.safebrowsing.blockedURIs.enabled browser.safebrowsing.update.enabled
    extensions.update.enabled extensions.blocklist.enabled extensions.getAddons.cache.enabled
    browser.search.update browser.region.update.enabled media.gmp-manager.updateEnabled"""
PREFS = {  # a fresh profile that stays off the network: no updates, telemetry or checks
    **dict.fromkeys(OFF.split(), False),
    "app.update.disabledForTesting": True,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "toolkit.telemetry.server": "",
    "services.settings.server": "data:,#remote-settings-dummy/v1",
    "browser.startup.homepage_override.mstone": "ignore",
    "layout.css.devPixelsPerPx": "1.0",
    "marionette.port": 0,  # any free port; Firefox writes it to <profile>/MarionetteActivePort
}
ENV = {  # Gecko then refuses non-local connections (and honours services.settings.server)
    "MOZ_DISABLE_NONLOCAL_CONNECTIONS": "1",
    "MOZ_HEADLESS_WIDTH": "1280",
    "MOZ_HEADLESS_HEIGHT": "800",
}
ERRORS_JS = """
  return Services.console.getMessageArray()
    .filter(m => m instanceof Ci.nsIScriptError
                 && (m.logLevel == Ci.nsIConsoleMessage.error || m.category == "Script Loader")
                 && /^(file|https?):/.test(m.sourceName))
    .map(m => `${m.category}: ${m.errorMessage} (${m.sourceName}:${m.lineNumber})`);
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    info = write_store(tmp_path_factory.mktemp("store"), models=[SMALL_MODEL])
    write_viewer(info["save_path"], log=quiet)
    return info


@pytest.fixture(scope="module")
def firefox(tmp_path_factory):
    exe = shutil.which("firefox-esr") or shutil.which("firefox")
    if exe is None:
        missing_browser("firefox-esr not found on PATH", "apt-get install firefox-esr")
    if Marionette is None:
        missing_browser("marionette-driver is not installed", "pip install -e '.[test]'")
    profile = tmp_path_factory.mktemp("firefox-profile")
    prefs = (f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in PREFS.items())
    (profile / "user.js").write_text("".join(prefs))
    args = [exe, "-profile", str(profile), "-no-remote", "--headless", "--marionette"]
    log, port_file = profile / "firefox.log", profile / "MarionetteActivePort"
    out = log.open("wb")
    proc = subprocess.Popen(
        [*args, "-remote-allow-system-access", "about:blank"],  # chrome context: the console
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **ENV},
        start_new_session=True,  # its own process group, content processes included
    )
    try:
        for _ in range(600):  # up to a minute for a cold start; never a timing assertion
            if port_file.is_file() and port_file.read_text().strip():
                break
            assert proc.poll() is None, f"firefox exited early:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        else:
            pytest.fail(f"firefox wrote no Marionette port:\n{log.read_text()[-3000:]}")
        client = Marionette(host="127.0.0.1", port=int(port_file.read_text()))
        client.start_session()
        client.timeout.script = 30
        yield client
        client.delete_session()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        out.close()


def errors(ff) -> list[str]:
    with ff.using_context("chrome"):
        return ff.execute_script(ERRORS_JS)


@pytest.fixture
def ff(firefox):
    """The browser, with its console cleared before and checked for page errors after."""
    with firefox.using_context("chrome"):
        firefox.execute_script("Services.console.reset();")
    yield firefox
    assert errors(firefox) == [], "JavaScript errors in the page"


def wait(ff, expr: str, *args):
    Wait(ff, timeout=30).until(lambda m: m.execute_script(f"return {expr}", script_args=args))


def js(ff, expr: str, *args):
    return ff.execute_script(f"return {expr}", script_args=args)


def open_view(ff, store, fragment: str = ""):
    ff.navigate(Path(store["save_path"], "index.html").as_uri() + fragment)
    wait(ff, "document.querySelector('#app > :not(#boot-note)')")


def shot(ff, artifacts, name: str):
    (artifacts / f"firefox-{name}.png").write_bytes(ff.screenshot(format="binary", full=False))


def move_to(ff, x: float, y: float) -> None:
    ff.actions.sequence("pointer", "mouse", {"pointerType": "mouse"}).pointer_move(
        round(x), round(y)
    ).perform()


def hover_cell(ff, i: int, j: int) -> str:
    """Move the pointer onto cell (query i, key j) from the scroller's geometry; the tooltip."""
    x, y, cs, sl, st = js(
        ff,
        """(s => { const r = s.getBoundingClientRect();
        return [r.left + s.clientLeft, r.top + s.clientTop, +s.dataset.cell,
                s.scrollLeft, s.scrollTop]; })(document.querySelector('.scroller'))""",
    )
    pointer = ff.actions.sequence("pointer", "mouse", {"pointerType": "mouse"})
    pointer.pointer_move(round(x + (j + 0.5) * cs - sl), round(y + (i + 0.5) * cs - st)).perform()
    tip = "document.getElementById('tip')"
    wait(ff, f"!{tip}.hidden && {tip}.textContent.startsWith(`query ${{arguments[0]}}:`)", i)
    return js(ff, f"{tip}.textContent")


@pytest.mark.browser
def test_home_lists_prompts_and_xss_text_is_literal(ff, store, artifacts):
    open_view(ff, store)
    wait(ff, "document.querySelector('.vrow')")
    assert js(ff, "document.querySelector('.toolbar .note').textContent") == "5 of 5 prompts"
    rows = js(ff, "[...document.querySelectorAll('.vrow:not([hidden])')].map(r => r.textContent)")
    assert len(rows) == 5
    for text in ("The lighthouse keeper kept two logbooks.", XSS_TEXT.split(" </")[0]):
        assert any(text in r for r in rows), (text, rows)
    assert js(ff, "document.querySelectorAll('img').length") == 0
    shot(ff, artifacts, "home")
    open_view(ff, store, f"#/prompt/{SMALL}/{store['xss_hash']}")
    wait(ff, "document.querySelector('canvas.thumb')")
    assert js(ff, "document.querySelector('.prompt-text').textContent") == XSS_TEXT
    assert js(ff, "document.querySelectorAll('img').length") == 0
    with pytest.raises(NoAlertPresentException):
        Alert(ff).text  # noqa: B018 (raises: no alert() dialog fired)


@pytest.mark.browser
def test_hash_navigation_reaches_head_and_hover_matches_npz(ff, store, artifacts):
    save, h = store["save_path"], store["hashes"]["repeat-01"]
    open_view(ff, store)
    open_view(ff, store, f"#/head/{SMALL}/{h}/0/1")  # the same page: only the hash changes
    wait(ff, "document.querySelector('.pane[data-draw-ms]')")
    assert "L0 H1" in js(ff, "document.getElementById('crumbs').textContent")
    check_hover(lambda i, j: hover_cell(ff, i, j), save, SMALL, h, layer=0, head=1)
    shot(ff, artifacts, "head")


@pytest.mark.browser
def test_metrics_heat_map_pointer_names_the_drawn_cell(ff, store):
    open_view(ff, store, f"#/metrics/{SMALL}")
    wait(ff, "document.querySelector('.heat canvas')")

    def hover(li, hd):
        x, y = js(ff, f"({HEAT_CENTRE_JS})(arguments[0])", [li, hd, 3, 2])
        pointer = ff.actions.sequence("pointer", "mouse", {"pointerType": "mouse"})
        pointer.pointer_move(round(x), round(y)).perform()
        tip = "document.getElementById('tip')"
        wait(ff, f"!{tip}.hidden && {tip}.textContent.startsWith('L')")
        return js(ff, f"{tip}.textContent")

    check_heat_pointer(hover, lambda w: js(ff, f"({HEAT_RESIZE_JS})(arguments[0])", w), 3, 2)


@pytest.mark.browser
def test_error_collector_sees_errors(firefox, tmp_path):
    """The check every viewer test ends with would catch a broken page: a thrown error, an
    unhandled rejection, a script that fails to load, and CSP blocks of an inline script and
    of a request off the machine (the viewer's CSP blocks any such request)."""
    (tmp_path / "canary.js").write_text(
        'Promise.reject(new Error("rejected canary"));\n'
        'throw new Error("canary, inline ran: " + (window.inline === 1));\n'
    )
    (tmp_path / "canary.html").write_text(
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "script-src 'self' file:\">\n<script>window.inline = 1;</script>\n"
        '<script src="canary.js"></script><script src="gone.js"></script>\n'
        '<img src="http://127.0.0.1:9/beacon.png">\n'
    )
    with firefox.using_context("chrome"):
        firefox.execute_script("Services.console.reset();")
    firefox.navigate((tmp_path / "canary.html").as_uri())
    wanted = ["canary, inline ran: false", "rejected canary", "gone.js", "inline script"]
    wanted.append("http://127.0.0.1:9/beacon.png")
    found = lambda: "\n".join(errors(firefox))  # noqa: E731
    try:
        Wait(firefox, timeout=30).until(lambda _: all(w in found() for w in wanted))
    finally:
        print(found())


@pytest.mark.browser
def test_token_and_lens_hover_in_firefox(ff, prediction_store):
    s = prediction_store
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


@pytest.mark.browser
def test_value_weighted_dla_row_and_top_examples_in_firefox(ff, heads_store, artifacts):
    s, store = heads_store, heads_store["store"]
    model, h, layer, head = s["other"], s["hash"], 1, 2
    pattern = store.patterns(model, h, layers=[layer])[0, head]
    norms = store.value_norms(model, h, layers=[layer])[0, head]
    dla = store.head_dla(model, h, layers=[layer])[0, head]
    open_view(ff, s, f"#/head/{model}/{h}/{layer}/{head}")
    wait(ff, "document.querySelector('.pane[data-draw-ms]')")
    js(ff, "document.querySelector('button.weighting').click()")
    wait(ff, "document.querySelector(\"button.weighting[aria-pressed='true']\")")
    for i, j in ((5, 2), (12, 12)):
        check_weighted_tip(hover_cell(ff, i, j), pattern, norms, i, j)
    tip = "document.getElementById('tip').textContent"
    for i in (3, len(s["tokens"]) - 1):
        move_to(ff, *js(ff, DLA_TOKEN_POINT, i))
        wait(ff, f"{tip}.startsWith('position {i}:')")
        check_dla_tip(js(ff, tip), s["tokens"], dla, i)
    shot(ff, artifacts, "head-value-weighted")
    js(ff, "localStorage.clear()")
    tokens = {r["hash"]: r["tokens"] for r in store.prompts(model)}
    open_view(ff, s, f"#/top/{model}/{layer}/{head}?by=value_weighted")
    wait(ff, "document.querySelector('.top-row')")
    want = brute_force_top(store, model, layer, head, "value_weighted", 32)
    check_top_rows(js(ff, TOP_ROWS), want, tokens.get)
    shot(ff, artifacts, "top-examples")
    _, h, q, k = want[0]
    js(ff, "document.querySelector('.top-row').click()")
    wait(ff, "document.querySelector('.pane[data-draw-ms]')")
    assert js(ff, "location.hash") == f"#/head/{model}/{h}/{layer}/{head}?q={q}&k={k}"
    wait(ff, f"document.querySelector('.sel-panel').textContent.includes('query {q}')")
