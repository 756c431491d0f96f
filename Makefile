# Entry points: `make demo` (the default ablation trained on real data, rendered, compared with the
# committed reference), `make quick` (one real run in about a minute) and `make test`.
# All create the virtual environment from requirements.txt when it is missing or out of date.
# The demo and the quick preset write to $(DEMO_RESULTS)/ (git-ignored) and always execute their runs
# (--force): the committed results under results/ are the reference and are never modified.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
SPEC ?= ablations/mask_ratio.yaml
DEMO_RESULTS ?= demo-results
NAME = $(basename $(notdir $(SPEC)))

.PHONY: demo quick own-data check-results test test-fast lint env clean-results

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# eolab itself, editable, so notebooks opened anywhere in JupyterLab can import it
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

demo: env
	$(PY) -m eolab ablate $(SPEC) --force --results-root $(DEMO_RESULTS)
	$(PY) -m eolab results diff $(DEMO_RESULTS)/$(NAME) results/$(NAME)

quick: env
	$(PY) -m eolab ablate ablations/quick.yaml --force --results-root $(DEMO_RESULTS)

# Your own corpus, no Python: TerraMesh S2 L2A + BigEarthNet-S2, each a card + source file, packed into
# .cache/corpora/own_data/ (a re-run keeps the finished shards), then ablations/own_data.yaml pre-trains on
# the same windows read as scenes and streamed from the packed corpus; compared with results/own_data.
own-data: env
	$(PY) -m eolab data pack sources/terramesh_s2l2a.yaml,sources/bigearthnet_s2.yaml --out .cache/corpora/own_data
	$(PY) -m eolab ablate ablations/own_data.yaml --force --results-root $(DEMO_RESULTS)
	$(PY) -m eolab results diff $(DEMO_RESULTS)/own_data results/own_data

# Which committed results were made by a commit older than the last change to eolab/ or notebooks/.
check-results: env
	$(PY) -m eolab results check results

# The house rules first (seconds): lint, and the import contracts of pyproject.toml (imports go one way).
lint: env
	$(VENV)/bin/ruff check eolab benchmarks tests tools
	$(VENV)/bin/lint-imports

test: env lint
	$(PY) -m pytest

# The unit suite only: skips the slow end-to-end tests (CI runs everything through `make test`).
test-fast: env
	$(PY) -m pytest -m "not slow"
