# studentperf: `make run` runs the pipeline on the demo data, `make test` runs the tests.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATASET ?= demo
SETUP   ?= C

.PHONY: run test install hooks lab export readme check-sync docs report smoke test-slow bench

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --no-compile -e ".[dev]"
	@# byte-code on all cores (pip's own compiling is one file at a time); like pip, a file that does not compile is not fatal
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib || echo "compileall: some files above did not compile (imports still work)"
	touch $(STAMP)

install: $(STAMP)
	@$(MAKE) --no-print-directory hooks VENV="$(VENV)"

# nbdev's authoring hooks, where this is a git checkout (`make install` runs it; safe to rerun): nbdev_install_hooks
# writes the clean-on-save hook to ~/.jupyter, .gitattributes + .gitconfig (notebook merges resolved by nbdev_merge,
# so a conflicted notebook stays a valid notebook) and a post-merge hook (nbdev_trust), pointed here at this project's
# .venv so they work without an activated environment; then a pre-commit hook refuses notebooks nbdev_clean would change.
hooks:
	@test -x $(BIN)/nbdev_install_hooks || $(MAKE) --no-print-directory $(STAMP)
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  PATH="$(abspath $(BIN)):$$PATH" $(BIN)/nbdev_install_hooks && \
	  git config --local merge.nbdev-merge.driver "$(abspath $(BIN))/nbdev_merge %O %A %B %P" && \
	  printf '#!/bin/sh\n# nbdev_install_hooks (via make hooks): trust the notebooks after a merge\n"%s/nbdev_trust"\n' \
	    "$(abspath $(BIN))" > "$$(git rev-parse --git-path hooks)/post-merge" && \
	  printf '%s\n' '#!/bin/sh' \
	    '# written by make hooks: refuse to commit a notebook that nbdev_clean would change (skip once: git commit --no-verify)' \
	    't=$$(mktemp -d) || exit 1; trap "rm -rf $$t" EXIT; bad=""' \
	    'for f in $$(git diff --cached --name-only --diff-filter=ACMR -- "*.ipynb"); do' \
	    '  git show ":$$f" > "$$t/a.ipynb" && cp "$$t/a.ipynb" "$$t/b.ipynb" && "$(abspath $(BIN))/nbdev_clean" --fname "$$t/b.ipynb" 2>/dev/null &&' \
	    '    cmp -s "$$t/a.ipynb" "$$t/b.ipynb" || bad="$$bad $$f"' \
	    'done' \
	    '[ -z "$$bad" ] || { echo "not clean:$$bad (run nbdev_clean --fname FILE, or save it from make lab, then git add)" >&2; exit 1; }' \
	    > "$$(git rev-parse --git-path hooks)/pre-commit" && chmod +x "$$(git rev-parse --git-path hooks)/pre-commit"; \
	else echo "not a git repository: git hooks not installed (the Jupyter save hook comes with make lab)"; fi

# JupyterLab on this machine only, in the project root, with the .venv kernel (the default "Python 3 (ipykernel)" kernel
# is .venv/bin/python) and nbdev's clean-on-save hook (jupyter_server_config.py); prints the URL with its token
LAB_PORT ?= 8888
lab: $(STAMP)
	$(BIN)/jupyter lab --config="$(CURDIR)/jupyter_server_config.py" --ServerApp.root_dir="$(CURDIR)" \
	  --ip=127.0.0.1 --port=$(LAB_PORT) --no-browser $(if $(filter 0,$(shell id -u)),--allow-root)

# the whole pipeline on the demo data, through DVC (a second `make run` with nothing changed does nothing)
run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	@$(BIN)/python -c "from studentperf.runner import summary, default_out; print(summary(default_out()))"
	@echo "executed notebooks: outputs/reports/*.html   metrics: $(BIN)/dvc metrics show   plots: $(BIN)/dvc plots show"

# pytest on 2 workers (pytest-xdist); tests sharing an expensive fixture stay on one worker (xdist_group, tests/conftest.py).
# The notebooks' own checks (what nbdev_test runs) are tests of that pool too (tests/test_notebooks.py).
# `make test` (under 5 minutes) leaves out the tests marked slow: the docs build, the DVC pipeline, report folders, Dask
# clusters, real-data and whole-pipeline runs; `make test-slow` runs them (CI runs both).
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadgroup
test: $(STAMP)
	$(PYTEST) -m "not slow" tests

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
	@changed=$$(git status --porcelain -- studentperf nbs README.md); [ -z "$$changed" ] || { echo "$$changed" >&2; exit 1; }

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
	$(PYTEST) -m slow tests

bench: $(STAMP)
	$(BIN)/python benchmarks/api_latency.py --out benchmarks/results/api_latency.md
