"""Indexes over the store: models.jsonl and each model's prompts.jsonl.

Rebuilt from what is on disk (not from the current run), in a deterministic order: models by
name, prompts by hash. Only complete prompt directories (with prompt.json) are listed. The
viewer is rebuilt beside them by `lens_cache.viewer.refresh_store`.
"""

from __future__ import annotations

from pathlib import Path

from lens_cache.faults import fault_point
from lens_cache.layout import MODEL_CFG_NAME, MODELS_INDEX, PROMPTS_INDEX
from lens_cache.locking import store_lock
from lens_cache.reader import model_names, prompt_records
from lens_cache.store import read_json, remove_orphaned_tmps, write_jsonl


def write_indexes(save_path: Path) -> dict:
    """Rewrite models.jsonl and every model's prompts.jsonl.

    Returns:
        `{"models": n_models, "prompts": n_prompts}`.
    """
    save_path = Path(save_path)
    with store_lock(save_path, "writing the indexes"):  # see lens_cache.locking
        names = model_names(save_path)
        for folder in [save_path, *(save_path / n for n in names)]:
            remove_orphaned_tmps(folder)
        cfgs = [read_json(save_path / n / MODEL_CFG_NAME) for n in names]
        fault_point("index")
        write_jsonl(save_path / MODELS_INDEX, cfgs)
        n_prompts = 0
        for name in names:
            records = prompt_records(save_path / name)
            fault_point("index")
            write_jsonl(save_path / name / PROMPTS_INDEX, records)
            n_prompts += len(records)
    return {"models": len(names), "prompts": n_prompts}
