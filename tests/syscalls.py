"""What the durability tests share: the guard that fails them where strace is required, and a
reader of strace logs (`strace -f -y -s 4096 -o LOG`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import NoReturn

import pytest

REQUIRE_STRACE = "LENS_CACHE_REQUIRE_STRACE"


def strace_required() -> bool:
    """`make test` sets LENS_CACHE_REQUIRE_STRACE=1 (it installs strace): there these tests run."""
    return os.environ.get(REQUIRE_STRACE, "") not in ("", "0") or bool(os.environ.get("CI"))


def missing_strace(why: str) -> NoReturn:
    """Skip where strace cannot run, or fail where it is required, like the browser tests."""
    if strace_required():
        pytest.fail(f"{why}, and {REQUIRE_STRACE}=1 requires the strace tests")
    pytest.skip(f"{why}; `make test` installs it (apt-get install strace)")


# --- reading a log ------------------------------------------------------------------------------


@dataclass
class Call:
    name: str
    args: str
    result: str = ""

    def ok(self) -> bool:
        return self.result.split(" ")[0].split("<")[0].isdigit()

    def strings(self) -> list[str]:
        """The quoted path arguments, unescaped as strace escapes them."""
        found = re.findall(r'"((?:[^"\\]|\\.)*)"', self.args)
        return [s.encode("latin-1").decode("unicode_escape") for s in found]

    def fd_path(self) -> str:
        """The path `-y` prints beside the first file descriptor: `fsync(5</a/b>)`."""
        m = re.match(r"\s*\d+<(.*)>", self.args)
        return m.group(1) if m else ""


_LINE = re.compile(r"^(\d+)\s+(.*)$")
_DONE = re.compile(r"^(\w+)\((.*)\)\s+=\s+(.*)$")
_START = re.compile(r"^(\w+)\((.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)\)\s+=\s+(.*)$")


def parse_log(text: str) -> list[Call]:
    """The calls in the order they started; a call another thread interrupted (`<unfinished
    ...>` then `<... resumed>`) is joined into one."""
    calls, open_calls = [], {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        pid, rest = m.groups()
        if done := _DONE.match(rest):
            calls.append(Call(*done.groups()))
        elif start := _START.match(rest):
            open_calls[pid] = Call(start.group(1), start.group(2))
            calls.append(open_calls[pid])
        elif (resumed := _RESUMED.match(rest)) and pid in open_calls:
            call = open_calls.pop(pid)
            call.args += resumed.group(2)
            call.result = resumed.group(3)
    return calls
