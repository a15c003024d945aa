"""The notebooks' own checks, one test per notebook: what `nbdev_test` runs (nbdev's `test_nb`, skipping the cells flagged
with settings.ini's `tst_flags`), run inside the same pytest-xdist pool as the other tests. `make test` then has no
separate notebook pass whose slowest notebook leaves the other core idle.

Each notebook runs in a child process (as in nbdev_test's own pool), so a notebook's globals, working directory and
environment never reach another test. The children fork from a clean `forkserver` process with the heavy imports
preloaded, not from the pytest worker: a worker that has already trained a model has started OpenMP threads, and GNU
OpenMP is not fork-safe."""
import contextlib, io, multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev.doclinks import nbglob
from nbdev.test import test_nb as execute_notebook_checks   # renamed: pytest would collect `test_nb` as a test

NOTEBOOKS = sorted(nbglob(as_path=True))   # nbdev_test's selection: nbs/*.ipynb, skipping files and folders starting with _ or .
PRELOAD = ['nbdev.test', 'fastcore.test', 'execnb.shell', 'matplotlib.pyplot', 'seaborn', 'studentperf.runner', 'studentperf.fastpath']


def run_notebook(nb: str, skip_flags: list, basepath: str) -> tuple:
    "In the child: nbdev's `test_nb` on one notebook; (passed, seconds, the traceback it printed)."
    err = io.StringIO()
    with contextlib.redirect_stderr(err): ok, secs = execute_notebook_checks(Path(nb), skip_flags=skip_flags, basepath=basepath)
    return ok, secs, err.getvalue()


@pytest.fixture(scope='session')
def notebook_pool():
    ctx = mp.get_context('forkserver')
    ctx.set_forkserver_preload(PRELOAD)
    with ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=1) as pool: yield pool


def test_the_notebooks_are_found():
    assert {'00_config.ipynb', '03_modeling.ipynb', 'index.ipynb'} <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook(nb, notebook_pool):
    cfg = get_config()
    ok, secs, err = notebook_pool.submit(run_notebook, str(nb), cfg.tst_flags.split(), str(cfg.config_path)).result()
    assert ok, f"{nb.name}: a cell failed after {secs:.0f} s (nbdev_test --path {nb.relative_to(cfg.config_path)} reruns it)\n{err}"
