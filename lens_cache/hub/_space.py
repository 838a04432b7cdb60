"""The hosted viewer's page: a static Space (or a local folder) holding our web/ files and a
`hub_config.js` that says which dataset to read, from which Hub-compatible server, at which
commit. The page reads the dataset's `viewer/index.json` and shards by range (web/hub_source.js).
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote, urlsplit

from lens_cache.hub._client import REPO_TYPE, check_repo_id, hub_errors
from lens_cache.hub._viewer_index import VIEWER_VERSION

CONFIG_SCRIPT = "hub_config.js"
DEFAULT_ENDPOINT = "https://huggingface.co"
SPACE_README = """---
title: {title}
sdk: static
app_file: index.html
tags:
- lens_cache
---

A lens_cache viewer of the dataset
[{dataset}]({endpoint}/datasets/{dataset}) at commit `{revision}`: it reads only the bytes
on screen, by range, from the dataset's shards.
"""


def endpoint_of(endpoint: str | None) -> str:
    import os

    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def config_script(endpoint: str, repo: str, revision: str) -> bytes:
    """`window.LENS_HUB_CONFIG = {...}`: JSON with `<` escaped, so no value ends the script."""
    cfg = {"endpoint": endpoint, "repo": repo, "revision": revision, "index": VIEWER_VERSION}
    text = json.dumps(cfg, sort_keys=True).replace("<", "\\u003c")
    return f"window.LENS_HUB_CONFIG = {text};\n".encode()


def page_scripts() -> list[str]:
    """The viewer's scripts in order, with the Hub's data source right after core.js (the
    views take what it defines when they load)."""
    from lens_cache.viewer import SCRIPTS
    from lens_cache.viewer.hosted import HOSTED_SCRIPTS

    return [SCRIPTS[0], *HOSTED_SCRIPTS, *SCRIPTS[1:]]


def site_files(endpoint: str, repo: str, revision: str) -> dict[str, bytes]:
    """`{path: bytes}` of the page: index.html, the viewer's scripts and stylesheet, config."""
    import jinja2

    from lens_cache.viewer import assets_dir

    assets = assets_dir()
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(endpoint))
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.from_string(assets.joinpath("hosted.html.j2").read_text(encoding="utf-8"))
    html = page.render(connect=f"{origin} https:", scripts=page_scripts(), format=VIEWER_VERSION)
    files = {"index.html": html.encode(), CONFIG_SCRIPT: config_script(endpoint, repo, revision)}
    for name in [*page_scripts(), "viewer.css"]:
        files[name] = assets.joinpath(name).read_bytes()
    return files


def write_page(folder: Path, endpoint: str | None, repo: str, revision: str = "main") -> str:
    """Write the page into `folder`; return its address with `?hub=` (and the endpoint)."""
    check_repo_id(repo)
    endpoint = endpoint_of(endpoint)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in site_files(endpoint, repo, revision).items():
        (folder / name).write_bytes(data)
    query = f"?hub={quote(repo, safe='/')}&endpoint={quote(endpoint, safe=':/')}"
    return (folder / "index.html").resolve().as_uri() + query


def push_space(
    space_id: str,
    dataset: str,
    *,
    revision: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    private: bool = False,
) -> str:
    """Create or update the static Space `space_id` holding the viewer of `dataset`, pinned to
    the dataset's commit at `revision` (default: its main branch now); returns its address."""
    from huggingface_hub import CommitOperationAdd, HfApi

    check_repo_id(space_id)
    check_repo_id(dataset)
    endpoint = endpoint_of(endpoint)
    api = HfApi(endpoint=endpoint, token=token)
    with hub_errors(dataset, "read"):
        sha = api.repo_info(dataset, repo_type=REPO_TYPE, revision=revision).sha
    with hub_errors(space_id, "push"):
        api.create_repo(
            space_id, repo_type="space", space_sdk="static", private=private, exist_ok=True
        )
        files = site_files(endpoint, dataset, sha)
        readme = SPACE_README.format(
            title=dataset.split("/")[-1], dataset=dataset, endpoint=endpoint, revision=sha
        )
        files["README.md"] = readme.encode()
        ops = [CommitOperationAdd(p, data) for p, data in sorted(files.items())]
        api.create_commit(
            space_id, ops, repo_type="space", commit_message=f"lens_cache viewer of {dataset}"
        )
    return f"{endpoint}/spaces/{space_id}"
