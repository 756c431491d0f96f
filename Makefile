# Two entry points: `make demo` (the default ablation on real data, rendered) and `make test`.
# Both create the virtual environment from requirements.txt when it is missing or out of date.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
SPEC ?= ablations/mask_ratio.yaml

.PHONY: demo test test-fast lint env clean-results

env: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# eolab itself, editable, so notebooks opened anywhere in JupyterLab can import it
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

demo: env
	$(PY) -m eolab ablate $(SPEC)

# The house rules first (seconds): lint, and the import contracts of pyproject.toml (imports go one way).
lint: env
	$(VENV)/bin/ruff check eolab benchmarks tests tools
	$(VENV)/bin/lint-imports

test: env lint
	$(PY) -m pytest

# The unit suite only: skips the slow end-to-end tests (CI runs everything through `make test`).
test-fast: env
	$(PY) -m pytest -m "not slow"
