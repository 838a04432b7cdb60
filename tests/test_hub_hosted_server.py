"""tests/hubserver.py as a browser sees the Hub: CORS, preflights, ranges, static Spaces.

The repos are made by the real `huggingface_hub` client, in a child process (it reads
HF_ENDPOINT at import time); the browser's side is played by raw `http.client` requests, whose
answers are compared with what the Hub sends a page (CORS headers it exposes, 206 with
Content-Range) and with what the client itself reads back (`hf_hub_download`).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.hubserver import ALICE, TOKENS, HubServer, client_env

BLOB = bytes(range(256)) * 40  # 10 KB, binary: goes up as LFS
SITE = {"index.html": b"<!doctype html><p>space</p>", "app.js": b"console.log(1);\n"}

CLIENT = """
import json, sys
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download
api = HfApi(token=sys.argv[1])
work = Path.cwd()
api.create_repo("alice/ds", repo_type="dataset")
api.upload_file(path_or_fileobj=work / "blob.bin", path_in_repo="x/blob.bin",
                repo_id="alice/ds", repo_type="dataset")
for name, sdk in (("site", "static"), ("app", "gradio")):
    api.create_repo("alice/" + name, repo_type="space", space_sdk=sdk)
    api.upload_folder(folder_path=work / "site", repo_id="alice/" + name, repo_type="space")
api.create_repo("alice/hidden", repo_type="space", space_sdk="static", private=True)
api.upload_folder(folder_path=work / "site", repo_id="alice/hidden", repo_type="space")
got = Path(hf_hub_download("alice/ds", "x/blob.bin", repo_type="dataset")).read_bytes()
print(json.dumps({"downloaded": got == (work / "blob.bin").read_bytes()}))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    work = tmp_path_factory.mktemp("hosted-client")
    (work / "blob.bin").write_bytes(BLOB)
    for name, data in SITE.items():
        (work / "site" / name).parent.mkdir(exist_ok=True)
        (work / "site" / name).write_bytes(data)
    with HubServer(tokens=TOKENS).start() as server:
        env = {**client_env(server.url, work), "PYTHONPATH": str(REPO)}
        proc = subprocess.run(
            [sys.executable, "-c", CLIENT, ALICE],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert json.loads(proc.stdout.splitlines()[-1]) == {"downloaded": True}
        yield server


def _ask(hub: HubServer, method: str, path: str, headers: dict | None = None):
    port = int(hub.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


RESOLVE = "/datasets/alice/ds/resolve/main/x/blob.bin"


def test_range_request_from_another_origin(hub):
    headers = {"Origin": "http://alice-site.static.localhost", "Range": "bytes=1000-1099"}
    status, got, body = _ask(hub, "GET", RESOLVE, headers)
    assert status == 206
    assert body == BLOB[1000:1100]
    assert got["content-range"] == f"bytes 1000-1099/{len(BLOB)}"
    assert got["content-length"] == "100"
    assert got["accept-ranges"] == "bytes"
    assert got["access-control-allow-origin"] == "*"
    exposed = {h.strip().lower() for h in got["access-control-expose-headers"].split(",")}
    # a page reads these to know the file's size and that it got the range it asked for
    assert {"content-range", "content-length", "accept-ranges", "x-repo-commit"} <= exposed


def test_suffix_range_and_whole_file(hub):
    status, got, body = _ask(hub, "GET", RESOLVE, {"Range": "bytes=-8"})
    assert (status, body) == (206, BLOB[-8:])
    status, got, body = _ask(hub, "GET", RESOLVE)
    assert (status, body, got["access-control-allow-origin"]) == (200, BLOB, "*")
    status, got, _ = _ask(hub, "GET", RESOLVE, {"Range": f"bytes={len(BLOB)}-"})
    assert (status, got["content-range"]) == (416, f"bytes */{len(BLOB)}")


def test_preflight(hub):
    headers = {
        "Origin": "null",  # a page opened from disk
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range",
    }
    status, got, body = _ask(hub, "OPTIONS", RESOLVE, headers)
    assert (status, body) == (204, b"")
    assert got["access-control-allow-origin"] == "*"
    assert "range" in got["access-control-allow-headers"].lower()
    assert "GET" in got["access-control-allow-methods"]


def test_static_space_served_from_its_own_host(hub):
    url = hub.static_url("alice/site")
    assert url.startswith("http://alice-site.static.localhost:")
    host = url.split("//", 1)[1].rstrip("/")
    status, got, body = _ask(hub, "GET", "/", {"Host": host})
    assert (status, body) == (200, SITE["index.html"])
    assert got["content-type"].startswith("text/html")
    status, got, body = _ask(hub, "GET", "/app.js", {"Host": host})
    assert (status, body) == (200, SITE["app.js"])
    assert got["content-type"].startswith("text/javascript")
    assert _ask(hub, "GET", "/nope.js", {"Host": host})[0] == 404
    # the Hub's page of the Space frames the static host
    status, _, body = _ask(hub, "GET", "/spaces/alice/site")
    assert status == 200 and f'src="{url}"'.encode() in body


@pytest.mark.parametrize("repo", ["alice/app", "alice/hidden", "alice/none"])
def test_no_static_host_for_other_spaces(hub, repo):
    """A Gradio Space, a private one and one that does not exist have no static site."""
    host = hub.static_url(repo).split("//", 1)[1].rstrip("/")
    assert _ask(hub, "GET", "/", {"Host": host})[0] == 404


def test_space_files_still_read_by_the_client(hub):
    status, _, body = _ask(hub, "GET", "/spaces/alice/site/resolve/main/app.js")
    assert (status, body) == (200, SITE["app.js"])
