"""Stores from elsewhere: each hostile file, alone in an otherwise good store, is met by every
command that reads a store (`cache verify`, `view`, `pool`) in a child process under a memory
limit. Each command names the file in one line, without a traceback; the viewer and the pooled
dataset still serve the other prompts; and no file outside the store is opened (an audit hook
in the child watches every `open` and directory listing).
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

    def run(self, *args) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "HOSTILE_MEMORY_LIMIT": str(MEMORY_LIMIT),
            "HOSTILE_OUTSIDE": str(self.outside.resolve()),
            "HF_HUB_OFFLINE": "1",
        }
        env.pop("LENS_CACHE_DEBUG", None)
        command = [sys.executable, "-c", CHILD, *args, "-s", str(self.store)]
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
