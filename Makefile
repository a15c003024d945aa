# studentperf: `make run` runs the pipeline on the demo data, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install export clean-nbs readme check-sync

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/studentperf run --dataset demo

test: $(STAMP)
	$(BIN)/nbdev_test --n_workers 2
	$(BIN)/python -m pytest -q tests

export: $(STAMP)
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean

readme: $(STAMP)
	$(BIN)/python tools/readme.py

# fails when the package, the notebooks or the README are out of sync with the notebooks
check-sync: $(STAMP)
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean
	$(BIN)/python tools/readme.py
	git status --porcelain -- studentperf nbs README.md | tee /dev/stderr | (! grep -q .)
