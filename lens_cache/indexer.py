"""Indexes over the store: models.jsonl, each model's prompts.jsonl, and index.html.

Rebuilt from what is on disk (not from the current run), in a deterministic order: models by
name, prompts by hash. Only complete prompt directories (with prompt.json) are listed.
"""

from __future__ import annotations

from pathlib import Path

from lens_cache.store import PROMPT_NAME, read_json, write_jsonl, write_text

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


def write_indexes(save_path: Path, *, html: bool = True) -> dict:
    """Rewrite models.jsonl, every model's prompts.jsonl and (unless `html=False`) index.html.

    Returns:
        `{"models": n_models, "prompts": n_prompts, "index_html": path or None}`.
    """
    save_path = Path(save_path)
    names = model_names(save_path)
    write_jsonl(
        save_path / "models.jsonl", [read_json(save_path / n / MODEL_CFG_NAME) for n in names]
    )
    n_prompts = 0
    for name in names:
        records = prompt_records(save_path / name)
        write_jsonl(save_path / name / "prompts.jsonl", records)
        n_prompts += len(records)
    index_html = write_index_html(save_path) if html else None
    return {"models": len(names), "prompts": n_prompts, "index_html": index_html}


def write_index_html(save_path: Path) -> Path:
    """A plain entry page listing the models and prompt counts (the viewer replaces it)."""
    from jinja2 import Environment

    template = Environment(autoescape=True).from_string(_PLACEHOLDER)
    save_path = Path(save_path)
    models = [(n, len(prompt_records(save_path / n))) for n in model_names(save_path)]
    path = save_path / "index.html"
    write_text(path, template.render(models=models))
    return path


_PLACEHOLDER = """<!doctype html>
<html><head><meta charset="utf-8"><title>lens_cache</title></head>
<body><h1>lens_cache export</h1><ul>
{% for name, n in models %}<li>{{ name }}: {{ n }} prompts</li>{% endfor %}
</ul></body></html>
"""
