# studentperf: `make run` runs the pipeline on the demo data, `make test` runs the tests.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATASET ?= demo
SETUP   ?= C

.PHONY: run test install export readme check-sync docs report smoke test-slow bench

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# the whole pipeline on the demo data, through DVC (a second `make run` with nothing changed does nothing)
run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@$(BIN)/python -c "from studentperf.runner import summary, default_out; print(summary(default_out()))"
	@echo "executed notebooks: outputs/reports/*.html   metrics: $(BIN)/dvc metrics show   plots: $(BIN)/dvc plots show"

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

# the docs site without Quarto (nbdev_proc_nbs + Sphinx) into _docs/, then its checks
docs: $(STAMP)
	$(BIN)/python tools/docs.py --executed outputs/reports
	$(BIN)/python tools/check_docs.py

report: $(STAMP)
	$(BIN)/studentperf report --dataset $(DATASET) --setup $(SETUP) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

# the container recipe (deploy/app.sh) in a fresh venv: install, serve, probe
smoke: $(STAMP)
	bash deploy/smoke.sh

test-slow: $(STAMP)
	STUDENTPERF_SLOW=1 $(BIN)/python -m pytest -q tests/test_dvc.py tests/test_report.py

bench: $(STAMP)
	$(BIN)/python benchmarks/api_latency.py --out benchmarks/results/api_latency.md
