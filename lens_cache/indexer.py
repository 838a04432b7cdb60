"""Indexes over the store: models.jsonl, each model's prompts.jsonl, and index.html.

Rebuilt from what is on disk (not from the current run), in a deterministic order: models by
name, prompts by hash. Only complete prompt directories (with prompt.json) are listed.
"""

from __future__ import annotations

from pathlib import Path

from lens_cache.faults import fault_point
from lens_cache.locking import store_lock
from lens_cache.progress import log
from lens_cache.store import PROMPT_NAME, read_json, remove_orphaned_tmps, write_jsonl

MODEL_CFG_NAME = "model_cfg.json"


def model_names(save_path: Path) -> list[str]:
    """Models in the store: subdirectories holding a model_cfg.json, sorted."""
    save_path = Path(save_path)
    if not save_path.is_dir():
        return []
    return sorted(p.name for p in save_path.iterdir() if (p / MODEL_CFG_NAME).is_file())


def prompt_records(model_path: Path) -> list[dict]:
    """Every complete prompt of one model, sorted by hash."""
    prompts_path = Path(model_path) / "prompts"
    if not prompts_path.is_dir():
        return []
    records = []
    for directory in sorted(prompts_path.iterdir(), key=lambda p: p.name):
        try:
            records.append(read_json(directory / PROMPT_NAME))
        except (OSError, ValueError):
            continue  # incomplete (interrupted) prompt: not listed until a rerun finishes it
    return records


def write_indexes(save_path: Path, *, html: bool = True, quiet: bool = False) -> dict:
    """Rewrite models.jsonl, every model's prompts.jsonl and (unless `html=False`) the viewer.

    Returns:
        `{"models": n_models, "prompts": n_prompts, "viewer": write_viewer's report or None}`.
    """
    save_path = Path(save_path)
    with store_lock(save_path, "writing the indexes"):  # see lens_cache.locking
        names = model_names(save_path)
        for folder in [save_path, *(save_path / n for n in names)]:
            remove_orphaned_tmps(folder)
        cfgs = [read_json(save_path / n / MODEL_CFG_NAME) for n in names]
        fault_point("index")
        write_jsonl(save_path / "models.jsonl", cfgs)
        n_prompts = 0
        for name in names:
            records = prompt_records(save_path / name)
            fault_point("index")
            write_jsonl(save_path / name / "prompts.jsonl", records)
            n_prompts += len(records)
        viewer = write_viewer_quietly(save_path, quiet) if html and names else None
    return {"models": len(names), "prompts": n_prompts, "viewer": viewer}


def write_viewer_quietly(save_path: Path, quiet: bool) -> dict:
    """The static viewer (index.html and its data), with its disk cost reported."""
    from lens_cache.viewer import write_viewer

    report = write_viewer(save_path, log=lambda message: log(message, quiet=quiet))
    mb = 2**20
    log(
        f"viewer data: {report['viewer_bytes'] / mb:.1f} MB beside {report['npz_bytes'] / mb:.1f}"
        " MB of pattern files",
        quiet=quiet,
    )
    return report
