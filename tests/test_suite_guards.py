"""The suite's own guards: where the browsers (and strace) are required, their tests cannot
skip."""

import subprocess

import pytest

from tests.browser import REQUIRE_BROWSERS, missing_browser
from tests.helpers import REPO
from tests.syscalls import REQUIRE_STRACE, missing_strace


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
    """CI runs `make test` and `make test-tl3` (.ci/run): both run pytest with the variables set."""
    dry = subprocess.run(
        ["make", "-n", target], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    (line,) = [ln for ln in dry.splitlines() if "-m pytest" in ln]
    assert line.startswith(f"{REQUIRE_BROWSERS}=1 {REQUIRE_STRACE}=1 ")


def test_missing_strace_skips_only_where_strace_is_not_required(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(REQUIRE_STRACE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="strace is not on PATH"):
        missing_strace("strace is not on PATH")
    monkeypatch.setenv(REQUIRE_STRACE, "1")
    # a skip here must fail this test, not skip it
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as raised:
        missing_strace("strace is not on PATH")
    assert raised.type is pytest.fail.Exception
    assert f"{REQUIRE_STRACE}=1 requires" in str(raised.value)
