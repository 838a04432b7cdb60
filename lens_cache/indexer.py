"""Indexes over the store: models.jsonl, each model's prompts.jsonl and, where prompts store
`head_metrics`, its head_metrics.parquet (`lens_cache.metrics_table`).

Rebuilt from what is on disk (not from the current run), in a deterministic order: models by
name, prompts by hash. Only complete prompt directories (with prompt.json) are listed. The
viewer is rebuilt beside them by `lens_cache.viewer.refresh_store`.
"""

from __future__ import annotations

from pathlib import Path

from lens_cache.faults import fault_point
from lens_cache.layout import HEAD_METRICS_TABLE, MODEL_CFG_NAME, MODELS_INDEX, PROMPTS_INDEX
from lens_cache.locking import store_lock_unless
from lens_cache.metrics_table import scan as scan_metrics
from lens_cache.reader import model_names, normalize_record, prompt_records
from lens_cache.store import atomic_write, read_json, remove_orphaned_tmps, write_jsonl


def write_indexes(save_path: Path, *, held: bool = False) -> dict:
    """Rewrite models.jsonl and every model's prompts.jsonl, under the store's lock unless the
    caller says it already holds it (`held=True`).

    Returns:
        `{"models": n_models, "prompts": n_prompts}`.
    """
    save_path = Path(save_path)
    with store_lock_unless(held, save_path, "writing the indexes"):  # see lens_cache.locking
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
            write_metrics_table(save_path / name, records)
            n_prompts += len(records)
    return {"models": len(names), "prompts": n_prompts}


def write_metrics_table(model_path: Path, records: list[dict]) -> None:
    """`<model>/head_metrics.parquet` from the prompts on disk, or none when no prompt stores
    head metrics (a table left by pruned prompts would list what is gone)."""
    path = model_path / HEAD_METRICS_TABLE
    table = scan_metrics(model_path, [normalize_record(r) for r in records])
    if table is None:
        path.unlink(missing_ok=True)
        return
    import pyarrow.parquet as pq

    fault_point("index")
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
