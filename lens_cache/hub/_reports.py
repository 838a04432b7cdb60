"""What a push or a pull did: `PushReport` and `PullReport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class PushReport:
    """What a push did (or, with `dry_run`, would do).

    `files` lists every file of the dataset as `(path, size)`; `uploaded` and `skipped` split
    them by whether the repo already held identical bytes.
    """

    repo_id: str
    url: str = ""
    revision: str = "main"
    dry_run: bool = False
    files: list[tuple[str, int]] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    commits: int = 0
    bytes_uploaded: int = 0
    seconds: float = 0.0

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


@dataclass
class PullReport:
    """What a pull wrote: models, prompt count (and of those left out, `skipped`: their shards
    failed their checks), files downloaded and their bytes."""

    repo_id: str
    revision: str
    save_path: Path
    models: list[str] = field(default_factory=list)
    prompts: int = 0
    skipped: int = 0
    files: list[str] = field(default_factory=list)
    bytes_downloaded: int = 0
    seconds: float = 0.0
