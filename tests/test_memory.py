"""docs/exporting.md's memory claim, measured: an export holds about the model plus twice
--max-batch-mb (one batch being captured, one batch's bytes waiting for the writers), however
much it writes in all."""

import json
import subprocess
import sys

from tests.helpers import REPO

CAP_MB = 16
SLACK_MB = 96  # torch's forward buffers, compression buffers, allocator slack
CHILD = """
import json, resource, sys
from lens_cache import export
from lens_cache.models import load_model

model_dir, save, cap = sys.argv[1], sys.argv[2], float(sys.argv[3])
model = load_model(model_dir, device="cpu")
words = "the lighthouse keeper kept two logbooks weather ships hours lamp burned".split()
texts = [" ".join(words[(i + k) % len(words)] for k in range(120)) + f" {i}" for i in range(80)]
kw = dict(hooks=["pattern", "resid_post"], max_batch_mb=cap, index_html=False, quiet=True)
kw["batch_size"] = len(texts)  # the cap, not the prompt count, bounds each batch
export(model, texts[:2], save_path=save + "-warm", **kw)  # every code path once, then measure
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
(report,) = export(model, texts, save_path=save, **kw)
assert report.exported == len(texts), report  # none skipped as too long
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
sizes = [len(model.tokenize(t)) for t in texts]
cached = sum(model.n_layers * (model.n_heads * t * t + t * model.d_model) * 4 for t in sizes)
print(json.dumps({"before_mb": before, "after_mb": after, "cached_mb": cached / 2**20}))
"""


def test_peak_memory_is_about_the_model_plus_twice_the_batch_cap(gqa_dir, tmp_path, cli_env):
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(gqa_dir), str(tmp_path / "store"), str(CAP_MB)],
        env=cli_env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    bound = 2 * CAP_MB + SLACK_MB
    assert m["cached_mb"] > 5 * bound  # holding it all would break the bound many times over
    assert m["after_mb"] - m["before_mb"] <= bound, m
