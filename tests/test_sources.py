"""Prompts from datasets: local files, save_to_disk folders, labels into meta, named errors."""

import datetime
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lens_cache import export
from lens_cache.prompts import make_prompt, prompt_hash
from lens_cache.sources import (
    DatasetNotFoundError,
    DatasetSourceError,
    MissingColumnError,
    MissingSplitError,
    iter_dataset,
    read_dataset,
)
from tests.helpers import REPO, run_cli
from tests.hubserver import HubServer, client_env

ROWS = [
    {"text": "The film was wonderful.", "label": 1, "source": "imdb"},
    {"text": "A dull, slow story.", "label": 0, "source": "imdb"},
    {"text": "Great acting, weak plot.", "label": 1, "source": "sst"},
]
EXPECTED = [make_prompt(r["text"], {"label": r["label"], "source": r["source"]}) for r in ROWS]


@pytest.fixture
def parquet_file(tmp_path):
    table = pa.table(
        {
            "text": [r["text"] for r in ROWS],
            "label": pa.array(np.array([r["label"] for r in ROWS], dtype=np.int8)),
            "source": [r["source"] for r in ROWS],
            "score": pa.array(np.array([0.5, np.nan, 2.0], dtype=np.float32)),
            "tags": [["a", "b"], [], ["c"]],
            "day": [datetime.date(2024, 1, d) for d in (1, 2, 3)],
        }
    )
    path = tmp_path / "reviews.parquet"
    pq.write_table(table, path)
    return path


def test_parquet_labels_become_json_ready_meta(parquet_file):
    prompts = read_dataset(parquet_file, label_columns=["label", "source", "score", "tags", "day"])
    assert [p["text"] for p in prompts] == [r["text"] for r in ROWS]
    assert [p["hash"] for p in prompts] == [prompt_hash(r["text"]) for r in ROWS]
    assert prompts[0]["meta"] == {
        "label": 1,
        "source": "imdb",
        "score": 0.5,
        "tags": ["a", "b"],
        "day": "2024-01-01",
    }
    assert prompts[1]["meta"]["score"] is None  # NaN: JSON has none
    json.dumps([p["meta"] for p in prompts], allow_nan=False)
    assert read_dataset(parquet_file, label_columns="label, source") == EXPECTED


def test_dataset_labels_flow_into_the_export(parquet_file, gqa_model, tmp_path):
    prompts = read_dataset(parquet_file, label_columns=["label", "source"])
    export(
        gqa_model,
        prompts=prompts,
        save_path=tmp_path / "store",
        hooks=["resid_post"],
        layers="0",
        index_html=False,
        quiet=True,
    )
    for row in ROWS:
        d = tmp_path / "store" / gqa_model.name / "prompts" / prompt_hash(row["text"])
        record = json.loads((d / "prompt.json").read_text())
        assert (record["label"], record["source"]) == (row["label"], row["source"])  # top level


def test_jsonl_csv_and_json_files(tmp_path):
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")
    csv = tmp_path / "rows.csv"
    csv.write_text(
        "text,label,source\n" + "".join(f'"{r["text"]}",{r["label"]},{r["source"]}\n' for r in ROWS)
    )
    array = tmp_path / "rows.json"
    array.write_text(json.dumps(ROWS))
    for path in (jsonl, csv, array):
        assert read_dataset(path, label_columns=["label", "source"]) == EXPECTED


def test_save_to_disk_folders_and_splits(tmp_path):
    import datasets

    train = datasets.Dataset.from_list(ROWS)
    test = datasets.Dataset.from_list([{"text": "held out", "label": 0, "source": "x"}])
    train.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dict"))
    assert read_dataset(tmp_path / "one", label_columns=["label", "source"]) == EXPECTED
    held_out = read_dataset(tmp_path / "dict", split="test", label_columns=["label"])
    assert held_out == [make_prompt("held out", {"label": 0})]
    with pytest.raises(
        MissingSplitError, match="has no split 'validation'; its splits: train, test"
    ):
        read_dataset(tmp_path / "dict", split="validation")


def test_missing_column_lists_the_columns(parquet_file):
    with pytest.raises(MissingColumnError, match="no column 'sentence'; its columns: text, label"):
        read_dataset(parquet_file, text_column="sentence")
    with pytest.raises(MissingColumnError, match="no column 'stars'"):
        read_dataset(parquet_file, label_columns=["label", "stars"])


def test_unreadable_sources_have_named_errors(tmp_path, parquet_file):
    with pytest.raises(DatasetNotFoundError, match="not found: .*nope.parquet"):
        read_dataset(tmp_path / "nope.parquet")
    with pytest.raises(FileNotFoundError, match="Hugging Face Hub could not give it"):
        read_dataset("no-such-org/no-such-dataset")  # HF_HUB_OFFLINE=1: fails fast
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(parquet_file.read_bytes()[:100])
    with pytest.raises(DatasetSourceError, match="cannot read .*broken.parquet"):
        read_dataset(bad)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetSourceError, match="unknown file type '.txt'"):
        read_dataset(tmp_path / "notes.txt")
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(DatasetSourceError, match=r"bad.jsonl:2: not valid JSON"):
        read_dataset(jsonl)
    with pytest.raises(MissingSplitError, match="single file"):
        read_dataset(parquet_file, split="test")


def test_empty_texts_are_skipped_with_a_warning(tmp_path, capsys):
    path = tmp_path / "gaps.parquet"
    pq.write_table(pa.table({"text": ["one", "", None, "  ", "two"]}), path)
    assert [p["text"] for p in read_dataset(path)] == ["one", "two"]
    assert "skipped 3 rows with empty 'text'" in capsys.readouterr().err
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), numbers)
    with pytest.raises(DatasetSourceError, match="holds int at row 0, not text"):
        read_dataset(numbers)


def test_iter_dataset_checks_at_once_and_reads_only_what_is_taken(tmp_path, gqa_model):
    path = tmp_path / "rows.jsonl"
    rows = "".join(json.dumps(r) + "\n" for r in ROWS)
    path.write_text(rows + "{broken line\n")
    with pytest.raises(MissingColumnError, match="no column 'stars'"):
        iter_dataset(path, label_columns=["stars"])  # before any row is asked for
    with pytest.raises(DatasetSourceError, match=r"rows.jsonl:4: not valid JSON"):
        read_dataset(path)
    # Taking two prompts never reaches line 4, so the broken line does not matter.
    save = tmp_path / "store"
    export(gqa_model, prompts=iter_dataset(path), n_samples=2, save_path=save, quiet=True)
    stored = {p.name for p in (save / gqa_model.name / "prompts").iterdir()}
    assert stored == {prompt_hash(r["text"]) for r in ROWS[:2]}


SHARD_ROWS = 40


def _upload_two_shards(hub, tmp_path) -> dict:
    """`alice/reviews` on the test Hub: a train split in two parquet files, uploaded by the real
    huggingface_hub client. Returns the client environment."""
    data = tmp_path / "upload" / "data"
    data.mkdir(parents=True)
    for shard in range(2):
        texts = [f"review {shard * SHARD_ROWS + i}: the plot was fine" for i in range(SHARD_ROWS)]
        table = pa.table({"text": texts, "label": [i % 2 for i in range(SHARD_ROWS)]})
        pq.write_table(table, data / f"train-{shard:05d}-of-00002.parquet")
    env = client_env(hub.url, tmp_path / "client")
    env.update(HF_TOKEN="alice-token", PYTHONPATH=str(REPO))
    upload = (
        "from huggingface_hub import HfApi\n"
        "api = HfApi()\n"
        "api.create_repo('alice/reviews', repo_type='dataset')\n"
        f"api.upload_folder(folder_path={str(data.parent)!r}, repo_id='alice/reviews', "
        "repo_type='dataset')\n"
    )
    done = subprocess.run([sys.executable, "-c", upload], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return env


def test_a_hub_dataset_is_streamed_when_only_its_first_rows_are_needed(gqa_dir, tmp_path):
    with HubServer(tokens={"alice-token": "alice"}).start() as hub:
        env = _upload_two_shards(hub, tmp_path)

        def export_from_hub(*extra) -> tuple[set[str], set[str]]:
            """Run the CLI on the Hub dataset; the prompts stored, and the shards it fetched."""
            save = tmp_path / f"store{len(hub.log)}"
            hub.log.clear()
            args = ["-m", str(gqa_dir), "--dataset", "alice/reviews", "-s", str(save)]
            result = run_cli([*args, "-n", "3", "--label-columns", "label", "-q", *extra], env)
            assert result.returncode == 0, result.stderr
            stored = {p.name for p in (save / gqa_dir.name / "prompts").iterdir()}
            gets = {e.path.rsplit("/", 1)[1] for e in hub.log if e.method == "GET"}
            return stored, {g for g in gets if g.endswith(".parquet")}

        stored, fetched = export_from_hub()
        first_three = [f"review {i}: the plot was fine" for i in range(3)]
        assert stored == {prompt_hash(t) for t in first_three}
        assert fetched == {"train-00000-of-00002.parquet"}  # the second file is never read
        # --shuffle draws from every row, so the whole split is downloaded.
        stored, fetched = export_from_hub("--shuffle")
        assert len(stored) == 3
        assert fetched == {"train-00000-of-00002.parquet", "train-00001-of-00002.parquet"}
