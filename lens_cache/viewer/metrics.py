"""Per-head attention metrics for one prompt: the functions of `lens_cache.attention_metrics`,
under the names the viewer has always given them.

They live below the export chain so that an export (kind ``head_metrics``) and the viewer
compute them with one implementation: the numbers a store holds and the ones the viewer shows
from stored patterns cannot drift apart.
"""

from lens_cache.attention_metrics import LABELS as LABELS
from lens_cache.attention_metrics import METRIC_NAMES as METRIC_NAMES
from lens_cache.attention_metrics import SCORE_NAMES as SCORE_NAMES
from lens_cache.attention_metrics import baseline_metrics as baseline_metrics
from lens_cache.attention_metrics import diagonal as diagonal
from lens_cache.attention_metrics import duplicate_targets as duplicate_targets
from lens_cache.attention_metrics import duplicate_token as duplicate_token
from lens_cache.attention_metrics import entropy as entropy
from lens_cache.attention_metrics import first_token as first_token
from lens_cache.attention_metrics import head_metrics as head_metrics
from lens_cache.attention_metrics import induction as induction
from lens_cache.attention_metrics import induction_targets as induction_targets
from lens_cache.attention_metrics import label_heads as label_heads
from lens_cache.attention_metrics import max_attention as max_attention
from lens_cache.attention_metrics import previous_token as previous_token
from lens_cache.attention_metrics import uniform_patterns as uniform_patterns
