"""Stores from elsewhere: each hostile file, alone in an otherwise good store, is met by every
command that reads a store (`cache verify`, `view`, `pool`, `hub push`) in a child process under
a memory limit. Each command names the file in one line, without a traceback; the viewer, the
pooled dataset and the pushed dataset still hold the other prompts; and no file outside the
store is opened (an audit hook in the child watches every `open` and directory listing).

Datasets from elsewhere: a dataset on the Hub (tests/hubserver.py, reached with the real
`huggingface_hub` client) whose shard lies in its header is pulled the same way: the pull names
the shard in one line, writes the other prompts and nothing of the one the shard holds.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lens_cache
from lens_cache import export
from lens_cache.prompts import prompt_hash
from tests.hubserver import ALICE, client_env

TEXTS = ["The first prompt of three.", "A second, somewhat longer prompt.", "Third one."]
# The bomb below declares 17 GB; the commands need well under 2 GB of address space beyond
# what their imports map (torch maps a lot it never touches), so this limit lets any honest
# command finish and stops any that trusts a declared shape.
MEMORY_LIMIT = 6 * 2**30
BOMB_SHAPE = (1, 4, 32768, 32768)

CHILD = r"""
import os, resource, sys
limit = int(os.environ["HOSTILE_MEMORY_LIMIT"])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
outside = os.environ["HOSTILE_OUTSIDE"]

def audit(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args:
        path = args[0]
        if isinstance(path, (str, bytes, os.PathLike)):
            if os.path.realpath(os.fsdecode(path)).startswith(outside):
                sys.stderr.write(f"AUDIT: {event} outside the store: {os.fsdecode(path)}\n")

sys.addaudithook(audit)
sys.argv = ["lens-cache", *sys.argv[1:]]
from lens_cache.cli.main import console_script
sys.exit(console_script())
"""


@pytest.fixture(scope="module")
def good_store(gqa_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "store"
    export(gqa_model, prompts=TEXTS, save_path=path, quiet=True)
    return path


@pytest.fixture
def case(good_store, gqa_model, tmp_path):
    """A fresh copy of the store beside an `outside` folder; `case.victim` is the prompt folder
    the hostile file goes into."""
    store = tmp_path / "store"
    shutil.copytree(good_store, store)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = store / gqa_model.name / "prompts" / prompt_hash(TEXTS[0])
    return Case(store, outside, victim, gqa_model.name)


class Case:
    def __init__(self, store, outside, victim, model):
        self.store, self.outside, self.victim, self.model = store, outside, victim, model

    def run(self, *args, hub=None, store=None) -> subprocess.CompletedProcess:
        """The command line `args` on `store` (default: this case's store) in a child; with
        `hub` (a HubServer), the child's Hub client talks to it as alice."""
        base = client_env(hub.url, self.outside.parent / "client") if hub else dict(os.environ)
        env = {
            **base,
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "HOSTILE_MEMORY_LIMIT": str(MEMORY_LIMIT),
            "HOSTILE_OUTSIDE": str(self.outside.resolve()),
            **({"HF_TOKEN": ALICE} if hub else {"HF_HUB_OFFLINE": "1"}),
        }
        env.pop("LENS_CACHE_DEBUG", None)
        command = [sys.executable, "-c", CHILD, *args, "-s", str(store or self.store)]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


# --- the hostile files -------------------------------------------------------------------------


def _npz_member(path: Path, name: str, header: dict, data: bytes) -> None:
    """Rewrite one member of an npz: an .npy header of our choosing, then `data`."""
    with zipfile.ZipFile(path) as zf:
        others = {n: zf.read(n) for n in zf.namelist() if n != f"{name}.npy"}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, header)
            for start in range(0, len(data), 2**20):
                f.write(data[start : start + 2**20])
        for n, raw in others.items():
            zf.writestr(n, raw)


def bomb(case):
    """A member declaring 17 GB of float32, deflated from zeros (cheap to make, and to any
    reader that trusts the header, 17 GB to allocate)."""
    header = {"descr": "<f4", "fortran_order": False, "shape": BOMB_SHAPE}
    _npz_member(case.victim / "activations.npz", "blocks.0.attn.hook_pattern", header, bytes(2**24))
    return case.victim / "activations.npz"


def wrong_shape(case):
    """A real pattern array one token longer than the prompt."""
    npz = case.victim / "activations.npz"
    with np.load(npz) as z:
        arr = z["blocks.0.attn.hook_pattern"]
    t = arr.shape[-1] + 1
    bigger = np.zeros((1, arr.shape[1], t, t), arr.dtype)
    header = {"descr": arr.dtype.str, "fortran_order": False, "shape": bigger.shape}
    _npz_member(npz, "blocks.0.attn.hook_pattern", header, bigger.tobytes())
    return npz


def truncated_npz(case):
    npz = case.victim / "activations.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    return npz


def file_link(case):
    """activations.npz a link to a valid npz outside the store."""
    npz = case.victim / "activations.npz"
    shutil.move(npz, case.outside / "secret.npz")
    npz.symlink_to(case.outside / "secret.npz")
    return npz


def folder_link(case):
    """The prompt's folder a link to a (valid) folder outside the store."""
    shutil.move(case.victim, case.outside / "prompt")
    case.victim.symlink_to(case.outside / "prompt", target_is_directory=True)
    return case.victim


def absurd_header(case):
    """residuals.safetensors declaring a 2^40-byte header."""
    path = case.victim / "residuals.safetensors"
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 2**40) + raw[8:])
    return path


def lying_extents(case):
    """residuals.safetensors whose header puts a tensor past the end of the file."""
    path = case.victim / "residuals.safetensors"
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    lo, hi = header[name]["data_offsets"]
    header[name]["data_offsets"] = [lo, hi + 2**30]
    header[name]["shape"][0] += 2**30 // (4 * header[name]["shape"][-1])
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    return path


def prompt_not_utf8(case):
    path = case.victim / "prompt.json"
    path.write_bytes(b'{"text": "\xff\xfe\xfa", "hash": "' + case.victim.name.encode() + b'"}')
    return path


def prompt_huge_line(case):
    path = case.victim / "prompt.json"
    path.write_bytes(b'{"text": "' + b"x" * (10 * 2**20) + b"\xff")
    return path


HOSTILE = [
    bomb,
    wrong_shape,
    truncated_npz,
    file_link,
    folder_link,
    absurd_header,
    lying_extents,
    prompt_not_utf8,
    prompt_huge_line,
]
PATTERN_FILES = {bomb, wrong_shape, truncated_npz, file_link}


def _clean(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    assert "AUDIT" not in output, output
    return output


@pytest.mark.parametrize("make", HOSTILE, ids=lambda f: f.__name__)
def test_verify_names_the_hostile_file(case, make):
    bad = make(case)
    result = case.run("cache", "verify")
    output = _clean(result)
    assert result.returncode == 1, output
    assert str(bad) in output, output


@pytest.mark.parametrize("make", HOSTILE, ids=lambda f: f.__name__)
def test_view_skips_the_hostile_prompt_and_builds_the_others(case, make):
    bad = make(case)
    result = case.run("view")
    output = _clean(result)
    assert result.returncode == 0, output
    built = {p.parent.name for p in (case.store / "viewer_data").glob("*/*/stamp.json")}
    others = {prompt_hash(t) for t in TEXTS[1:]}
    assert others <= built, output
    if make in PATTERN_FILES or make in (folder_link, absurd_header, lying_extents):
        assert str(bad) in output, output  # named in one line; the prompt is left out
        assert case.victim.name not in (case.store / "viewer_data" / "lens_index.js").read_text()


@pytest.mark.parametrize("make", [absurd_header, lying_extents, file_link, folder_link])
def test_pool_skips_the_hostile_prompt(case, make):
    bad = make(case)
    if make is file_link:  # the residuals, not the patterns, are what pool reads
        bad.unlink()
        shutil.move(bad.parent / "residuals.safetensors", case.outside / "r.safetensors")
        bad = bad.parent / "residuals.safetensors"
        bad.symlink_to(case.outside / "r.safetensors")
    result = case.run("pool")
    output = _clean(result)
    assert result.returncode == 0, output
    assert str(bad) in output, output
    import pyarrow.parquet as pq

    shards = sorted((case.store / case.model / "pooled").glob("*/*.parquet"))
    hashes = set(pq.read_table(shards[0], columns=["hash"]).column("hash").to_pylist())
    assert hashes == {prompt_hash(t) for t in TEXTS[1:]}


def test_a_damaged_index_falls_back_to_the_prompt_folders(case):
    """prompts.jsonl with a 10 MB line and a line that is not UTF-8: the prompts are read
    from their folders instead (the index is made from them), and `view` writes it again."""
    index = case.store / case.model / "prompts.jsonl"
    index.write_bytes(b'{"hash": "' + b"y" * (10 * 2**20) + b'"}\n\xff\xfe\n')
    listed = lens_cache.open(case.store).prompts(case.model)
    assert sorted(r["hash"] for r in listed) == sorted(prompt_hash(t) for t in TEXTS)
    result = case.run("view")
    _clean(result)
    assert result.returncode == 0
    rewritten = [json.loads(line)["hash"] for line in index.read_text().splitlines()]
    assert sorted(rewritten) == sorted(prompt_hash(t) for t in TEXTS)


def test_a_viewer_manifest_that_lies_is_not_trusted(case):
    """viewer_data/manifest.npz listing a file that is gone, then one whose member declares
    17 GB: `view` rebuilds what the manifest cannot vouch for, within the memory limit."""
    data = case.store / "viewer_data"
    gone = next(data.glob(f"*/{case.victim.name}/L0.js"))
    gone.unlink()
    result = case.run("view")
    assert result.returncode == 0, _clean(result)
    assert gone.is_file()  # rebuilt: the manifest's entry was not taken on its word
    manifest = data / "manifest.npz"
    header = {"descr": "|u1", "fortran_order": False, "shape": (2**34,)}
    _npz_member(manifest, "manifest", header, bytes(2**20))
    result = case.run("view")
    assert result.returncode == 0, _clean(result)
    built = {p.parent.name for p in data.glob("*/*/stamp.json")}
    assert {prompt_hash(t) for t in TEXTS} <= built


# --- the Hub: a push from a hostile store, a pull of a hostile dataset ------------------------


def _one_line(output: str, name) -> bool:
    """Whether exactly one line of `output` names `name`."""
    return sum(str(name) in line for line in output.splitlines()) == 1


def _head_files(hub, repo: str) -> dict[str, bytes]:
    """`{path: bytes}` of every file at the head of `repo`'s main, as the server holds them."""
    r = hub.repos[f"dataset:{repo}"]
    files = r["commits"][r["branches"]["main"]]["files"]
    return {path: hub.blobs.get(e["sha256"]) for path, e in files.items()}


def _npz_pattern(store: Path, model: str, hash_: str, layer: int) -> np.ndarray:
    with np.load(store / model / "prompts" / hash_ / "activations.npz") as z:
        return z[f"blocks.{layer}.attn.hook_pattern"]


@pytest.mark.parametrize("make", HOSTILE, ids=lambda f: f.__name__)
def test_hub_push_leaves_out_the_hostile_prompt(case, make, hub):
    """The push names the file in one line and sends the other prompts, patterns and residuals,
    byte for byte as numpy reads them from the store."""
    from safetensors.numpy import load

    bad = make(case)
    repo = "alice/" + make.__name__.replace("_", "-")
    result = case.run("hub", "push", "--repo", repo, "--kinds", "patterns", "resid_post", hub=hub)
    output = _clean(result)
    assert result.returncode == 0, output
    assert _one_line(output, bad), output
    others = sorted(prompt_hash(t) for t in TEXTS[1:])
    shards = {p: load(b) for p, b in _head_files(hub, repo).items() if p.startswith("tensors/")}
    assert {p.split("/")[2] for p in shards} == {"patterns", "resid_post"}, sorted(shards)
    assert all(sorted(tensors) == others for tensors in shards.values()), sorted(shards)
    pushed = shards[f"tensors/{case.model}/patterns/layer_01/head_02-00000.safetensors"]
    for hash_ in others:
        expected = _npz_pattern(case.store, case.model, hash_, 1)[0, 2]
        np.testing.assert_array_equal(pushed[hash_], expected)


@pytest.mark.parametrize("link", ["folder", "file"])
def test_hub_push_sends_no_pooled_file_from_outside(case, hub, link):
    """A pooled dataset that is a link to a folder outside, or holds a link to a file outside,
    is named in one line and not pushed (nothing outside is even listed); the other goes."""
    pooled = case.store / case.model / "pooled"
    (pooled / "resid_post-mean").mkdir(parents=True)
    (pooled / "resid_post-mean" / "data-00000-of-00001.parquet").write_bytes(b"good")
    (case.outside / "data").mkdir()
    (case.outside / "data" / "data-00000-of-00001.parquet").write_bytes(b"secret")
    bad = pooled / "resid_post-last_token"
    if link == "folder":
        bad.symlink_to(case.outside / "data", target_is_directory=True)
    else:
        bad.mkdir()
        bad = bad / "data-00000-of-00001.parquet"
        bad.symlink_to(case.outside / "data" / "data-00000-of-00001.parquet")
    repo = f"alice/pooled-{link}-link"
    result = case.run("hub", "push", "--repo", repo, "--kinds", "patterns", "pooled", hub=hub)
    output = _clean(result)
    assert result.returncode == 0, output
    assert _one_line(output, bad), output
    pushed = {p: b for p, b in _head_files(hub, repo).items() if p.startswith("pooled/")}
    assert pushed == {f"pooled/{case.model}/resid_post-mean/data-00000-of-00001.parquet": b"good"}


def test_hub_push_sends_no_vocab_from_outside(gqa_model, hub, tmp_path):
    """vocab.json (sent with the predictions) a link to a file outside: named in one line and
    not sent; the predictions go."""
    store = tmp_path / "store"
    export(gqa_model, prompts=TEXTS[:1], save_path=store, hooks=["pattern", "logits"], quiet=True)
    (tmp_path / "outside").mkdir()
    vocab = store / gqa_model.name / "vocab.json"
    shutil.move(vocab, tmp_path / "outside" / "vocab.json")
    vocab.symlink_to(tmp_path / "outside" / "vocab.json")
    case = Case(store, tmp_path / "outside", None, gqa_model.name)
    push = ["hub", "push", "--repo", "alice/vocab-link", "--kinds", "predictions"]
    result = case.run(*push, hub=hub)
    output = _clean(result)
    assert result.returncode == 0, output
    assert _one_line(output, vocab), output
    pushed = sorted(_head_files(hub, "alice/vocab-link"))
    assert f"tensors/{gqa_model.name}/predictions-00000.safetensors" in pushed, pushed
    assert not [p for p in pushed if p.startswith("models/")], pushed


def _shard_parts(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _shard_bytes(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _edit_entry(edit):
    """A hostile shard maker that edits the entry of its one tensor (the victim's)."""

    def make(raw: bytes) -> bytes:
        header, data = _shard_parts(raw)
        key = next(k for k in header if k != "__metadata__")
        edit(header, key)
        return _shard_bytes(header, data)

    make.__name__ = edit.__name__
    return make


@_edit_entry
def past_the_end(header, key):
    """The tensor ends 1 GB past the end of the file (its shape says as much)."""
    entry = header[key]
    entry["data_offsets"][1] += 2**30
    entry["shape"][0] += 2**30 // (4 * entry["shape"][1])


@_edit_entry
def overlapping(header, key):
    """A second tensor over the same bytes as the victim's."""
    header["A" * 22] = dict(header[key])


@_edit_entry
def shape_not_its_bytes(header, key):
    """A shape one row longer than the bytes it points at."""
    header[key]["shape"][0] += 1


@_edit_entry
def shape_not_its_prompt(header, key):
    """Bytes that match the shape, a shape that is not the prompt's `[T, T]`."""
    header[key]["shape"] = [header[key]["shape"][0] ** 2]


def absurd_header_length(raw: bytes) -> bytes:
    return struct.pack("<Q", 2**40) + raw[8:]


HOSTILE_SHARDS = [
    past_the_end,
    overlapping,
    shape_not_its_bytes,
    shape_not_its_prompt,
    absurd_header_length,
]


def _write_folder(folder: Path, files: dict[str, bytes]) -> str:
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    return str(folder)


def _edit_table(files: dict, path: str, edit) -> tuple[str, bytes]:
    """`(path, bytes)` of the parquet table at `path` with `edit(rows)` applied (pyarrow)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(files[path]))
    rows = table.to_pylist()
    edit(rows)
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), out)
    return path, out.getvalue()


def meta_not_json(files, victim):
    """The victim's row of the prompts table has meta that is not JSON."""

    def edit(rows):
        next(r for r in rows if r["hash"] == victim)["meta"] = '{"kind": '

    return _edit_table(files, "data/prompts-00000-of-00001.parquet", edit)


def heads_beyond_count(files, victim):
    """The model's config in the models table claims 10^12 heads."""

    def edit(rows):
        config = json.loads(rows[0]["config"])
        rows[0]["config"] = json.dumps({**config, "n_heads": 10**12})

    return _edit_table(files, "data/models-00000-of-00001.parquet", edit)


TABLE_EDITS = {"meta-not-json": meta_not_json, "heads-beyond-count": heads_beyond_count}
# A manifest that lists a shard under a path outside the dataset.
UNSAFE_PATHS = {
    "manifest-dotdot": "tensors/../../outside/evil.safetensors",
    "manifest-absolute": "/tmp/outside/evil.safetensors",
}
UPLOAD = """
import sys
from huggingface_hub import HfApi
api = HfApi()
for folder in sys.argv[1:]:
    repo = "alice/" + folder.rsplit("/", 1)[1]
    api.create_repo(repo, repo_type="dataset")
    api.upload_folder(repo_id=repo, folder_path=folder, repo_type="dataset")
"""


@pytest.fixture(scope="module")
def hostile_repos(hub, good_store, gqa_model, tmp_path_factory) -> dict:
    """`good_store` pushed with one prompt per shard (`alice/good`), then one repo per hostile
    file, uploaded with the Hub client: `alice/good` with the victim's layer 0 head 0 pattern
    shard (or a table) replaced, its manifest listing the new bytes' size and sha256 (as a
    hostile pusher would write it); or with a manifest naming a path outside the dataset."""
    import hashlib

    work = tmp_path_factory.mktemp("hostile-hub")
    env = {**client_env(hub.url, work), "HF_TOKEN": ALICE}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    push = ["push", "--repo", "alice/good", "-s", good_store, "--kinds", "patterns", "resid_post"]
    command = [sys.executable, "-m", "lens_cache.hub", *map(str, push), "--shard-max-bytes", "1"]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    files = _head_files(hub, "alice/good")
    manifest = json.loads(files["lens_cache.json"])
    victim = prompt_hash(TEXTS[0])
    entry = next(
        e
        for e in manifest["files"]
        if e.get("kind") == "patterns" and (e["layer"], e["head"], e["first"]) == (0, 0, victim)
    )
    folders = []
    for make in HOSTILE_SHARDS:
        hostile = make(files[entry["path"]])
        entry.update(size=len(hostile), sha256=hashlib.sha256(hostile).hexdigest())
        edited = {**files, entry["path"]: hostile, "lens_cache.json": json.dumps(manifest).encode()}
        folders.append(_write_folder(work / make.__name__.replace("_", "-"), edited))
    for name, path in UNSAFE_PATHS.items():
        m = json.loads(files["lens_cache.json"])
        next(e for e in m["files"] if e["path"] == entry["path"])["path"] = path
        folders.append(
            _write_folder(work / name, {**files, "lens_cache.json": json.dumps(m).encode()})
        )
    m = json.loads(files["lens_cache.json"])
    m["models"][gqa_model.name]["patterns"]["zero"] = [0]
    worded = {**files, "lens_cache.json": json.dumps(m).encode()}
    folders.append(_write_folder(work / "layer-word", worded))
    for name, edit in TABLE_EDITS.items():
        m = json.loads(files["lens_cache.json"])
        path, table = edit(files, victim)
        listed = next(e for e in m["files"] if e["path"] == path)
        listed.update(size=len(table), sha256=hashlib.sha256(table).hexdigest())
        edited = {**files, path: table, "lens_cache.json": json.dumps(m).encode()}
        folders.append(_write_folder(work / name, edited))
    upload = [sys.executable, "-c", UPLOAD, *folders]
    subprocess.run(upload, env=env, check=True, capture_output=True, timeout=300)
    return {"shard": entry["path"], "victim": victim, "model": gqa_model.name}


@pytest.mark.parametrize("make", HOSTILE_SHARDS, ids=lambda f: f.__name__)
def test_hub_pull_writes_nothing_of_a_hostile_shard(hub, hostile_repos, good_store, tmp_path, make):
    """The pull names the shard in one line, exits 0, writes the other prompts (their patterns
    equal to the pushed store's, as numpy reads both) and nothing of the victim."""
    dest, model = tmp_path / "pulled", hostile_repos["model"]
    (tmp_path / "outside").mkdir()
    runner = Case(dest, tmp_path / "outside", None, model)
    repo = "alice/" + make.__name__.replace("_", "-")
    result = runner.run("hub", "pull", "--repo", repo, hub=hub)
    output = _clean(result)
    assert result.returncode == 0, output
    assert _one_line(output, hostile_repos["shard"]), output
    assert not (dest / model / "prompts" / hostile_repos["victim"]).exists()
    for text in TEXTS[1:]:
        for layer in range(gqa_model_layers(good_store, model)):
            np.testing.assert_array_equal(
                _npz_pattern(dest, model, prompt_hash(text), layer),
                _npz_pattern(good_store, model, prompt_hash(text), layer),
            )


@pytest.mark.parametrize("name", UNSAFE_PATHS)
def test_hub_pull_refuses_a_manifest_naming_a_path_outside(hub, hostile_repos, tmp_path, name):
    """The manifest is the dataset's index: one that names a path outside the dataset is
    refused whole, in one line naming the path, before anything is downloaded or written."""
    dest = tmp_path / "pulled"
    (tmp_path / "outside").mkdir()
    runner = Case(dest, tmp_path / "outside", None, hostile_repos["model"])
    result = runner.run("hub", "pull", "--repo", f"alice/{name}", hub=hub)
    output = _clean(result)
    assert result.returncode == 2, output
    assert _one_line(output, UNSAFE_PATHS[name]) and "escape" in output, output
    assert not dest.exists()


def test_hub_pull_refuses_a_manifest_whose_summary_lies(hub, hostile_repos, tmp_path):
    """A pattern layer named "zero" in a model's summary: the manifest is refused in one line,
    nothing written."""
    dest = tmp_path / "pulled"
    (tmp_path / "outside").mkdir()
    runner = Case(dest, tmp_path / "outside", None, hostile_repos["model"])
    result = runner.run("hub", "pull", "--repo", "alice/layer-word", hub=hub)
    output = _clean(result)
    assert result.returncode == 2, output
    assert _one_line(output, "lens_cache.json is malformed") and "'zero'" in output, output
    assert not dest.exists()


def test_hub_pull_skips_a_row_of_the_prompts_table_that_lies(hub, hostile_repos, tmp_path):
    """A row whose meta is not JSON costs its own prompt (named in one line), not the pull."""
    dest, model = tmp_path / "pulled", hostile_repos["model"]
    (tmp_path / "outside").mkdir()
    result = Case(dest, tmp_path / "outside", None, model).run(
        "hub", "pull", "--repo", "alice/meta-not-json", hub=hub
    )
    output = _clean(result)
    assert result.returncode == 0, output
    assert _one_line(output, hostile_repos["victim"]) and "prompts" in output, output
    pulled = sorted(p.name for p in (dest / model / "prompts").iterdir())
    assert pulled == sorted(prompt_hash(t) for t in TEXTS[1:])


def test_a_config_beyond_any_count_is_refused_by_pull_and_push(case, hub, hostile_repos):
    """`n_heads` of 10^12 sizes `range(n_heads)`: the pull (the models table) and the push
    (model_cfg.json) refuse the model in one line naming the file, under the memory limit."""
    dest = case.outside.parent / "pulled"
    result = case.run("hub", "pull", "--repo", "alice/heads-beyond-count", hub=hub, store=dest)
    output = _clean(result)
    assert result.returncode == 2, output
    assert _one_line(output, "data/models-00000-of-00001.parquet") and "n_heads" in output
    assert not (dest / case.model).exists()
    cfg_path = case.store / case.model / "model_cfg.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "n_heads": 10**12}))
    result = case.run("hub", "push", "--repo", "alice/heads-beyond-count-push", hub=hub)
    output = _clean(result)
    assert result.returncode == 2, output
    assert _one_line(output, cfg_path) and "n_heads" in output, output


def gqa_model_layers(store: Path, model: str) -> int:
    return json.loads((store / model / "model_cfg.json").read_text())["n_layers"]
