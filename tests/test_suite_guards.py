"""The suite's own guards: where the browsers are required, a browser test cannot skip."""

import subprocess

import pytest

from tests.browser import REQUIRE_BROWSERS, missing_browser
from tests.helpers import REPO


def test_a_missing_browser_skips_only_where_browsers_are_not_required(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(REQUIRE_BROWSERS, raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium not found"):
        missing_browser("chromium not found on PATH", "apt-get install chromium")
    for name in (REQUIRE_BROWSERS, "CI"):
        monkeypatch.setenv(name, "1")
        with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_BROWSERS}=1 requires"):
            missing_browser("chromium not found on PATH", "apt-get install chromium")
        monkeypatch.delenv(name)


@pytest.mark.parametrize("target", ["test", "test-tl3"])
def test_make_test_requires_the_browsers(target):
    """CI runs `make test` and `make test-tl3` (.ci/run): both run pytest with the variable set."""
    dry = subprocess.run(
        ["make", "-n", target], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    (line,) = [ln for ln in dry.splitlines() if "-m pytest" in ln]
    assert line.startswith(f"{REQUIRE_BROWSERS}=1 ")
