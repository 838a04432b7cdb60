"""The viewer's manifest: an unchanged rebuild reads it instead of each prompt's stamp.json and
prompt.js, gives the index a full build gives, and every change to the store updates it."""

import json
import os

import numpy as np

from lens_cache.layout import VIEWER_DATA_DIR
from lens_cache.synthetic import SMALL_MODEL, write_store
from lens_cache.viewer import write_viewer

SMALL = SMALL_MODEL.name


def quiet(_):
    pass


def manifest_hashes(save) -> set[str]:
    with np.load(save / VIEWER_DATA_DIR / "manifest.npz") as z:
        return set(json.loads(z["manifest"].tobytes())["models"][SMALL])


def index_bytes(save) -> bytes:
    return (save / VIEWER_DATA_DIR / "lens_index.js").read_bytes()


def test_unchanged_rebuild_reads_no_prompt_file_of_the_viewer(tmp_path):
    info = write_store(tmp_path, models=[SMALL_MODEL])
    save = info["save_path"]
    write_viewer(save, log=quiet)
    index = index_bytes(save)
    prompt_folders = [p for p in (save / VIEWER_DATA_DIR / SMALL).glob("*/stamp.json")]
    prompt_folders = [p.parent for p in prompt_folders]  # not the model's dist/ or top/
    for folder in prompt_folders:  # were these read, every prompt would be rebuilt
        (folder / "stamp.json").write_text("garbled")
        (folder / "prompt.js").write_text("garbled")
    again = write_viewer(save, log=quiet)
    assert (again["built"], again["bytes_written"]) == (0, 0)
    assert index_bytes(save) == index
    assert (folder / "stamp.json").read_text() == "garbled"


def test_index_from_the_manifest_equals_a_full_build(tmp_path):
    info = write_store(tmp_path, models=[SMALL_MODEL], n_prompts=6)
    save = info["save_path"]
    write_viewer(save, log=quiet)
    from_manifest = write_viewer(save, log=quiet)
    assert from_manifest["built"] == 0
    index = index_bytes(save)
    (save / VIEWER_DATA_DIR / "manifest.npz").unlink()
    from_stamps = write_viewer(save, log=quiet)  # each prompt's stamp.json and prompt.js
    assert from_stamps["built"] == 0 and index_bytes(save) == index
    assert write_viewer(save, log=quiet, force=True)["built"] == 11
    assert index_bytes(save) == index


def test_reexport_remove_and_prune_update_the_manifest(tmp_path):
    info = write_store(tmp_path, models=[SMALL_MODEL])
    save, hashes = info["save_path"], info["hashes"]
    write_viewer(save, log=quiet)
    assert manifest_hashes(save) == set(hashes.values())

    npz = save / SMALL / "prompts" / hashes["prose-01"] / "activations.npz"  # re-exported
    st = npz.stat()
    os.utime(npz, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert write_viewer(save, log=quiet)["built"] == 1
    assert write_viewer(save, log=quiet)["built"] == 0  # the manifest has the new source

    gone = hashes["prose-02"]  # removed from the store (as `cache prune` does)
    jsonl = save / SMALL / "prompts.jsonl"
    jsonl.write_text("".join(r + "\n" for r in jsonl.read_text().splitlines() if gone not in r))
    assert write_viewer(save, log=quiet)["pruned"] == 1
    assert manifest_hashes(save) == set(hashes.values()) - {gone}

    (save / VIEWER_DATA_DIR / SMALL / hashes["repeat-01"] / "L1.js").unlink()  # lost by hand
    assert write_viewer(save, log=quiet)["built"] == 1


def test_data_an_export_made_since_the_last_build_go_into_the_manifest(tmp_path):
    from lens_cache.viewer._build import build_prompt, read_model, read_prompts

    info = write_store(tmp_path, models=[SMALL_MODEL])
    save, h = info["save_path"], info["hashes"]["prose-01"]
    write_viewer(save, log=quiet)
    npz = save / SMALL / "prompts" / h / "activations.npz"  # re-exported ...
    st = npz.stat()
    os.utime(npz, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    prompt = next(p for p in read_prompts(save, SMALL) if p["hash"] == h)
    out = save / VIEWER_DATA_DIR / SMALL / h  # ... and its data made by the export's writers
    build_prompt(save, read_model(save, SMALL), prompt, out, quiet)
    assert write_viewer(save, log=quiet)["built"] == 0  # read from its stamp.json ...
    (out / "stamp.json").write_text("garbled")  # ... and now kept in the manifest
    assert write_viewer(save, log=quiet)["built"] == 0
