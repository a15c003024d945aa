"Shared fixtures: the UCI data directory (skipped with a visible reason when absent) and the project's parameters."
import os, subprocess, sys
from pathlib import Path
import pytest
from studentperf.config import load_params, project_root

ROOT = project_root()
UCI_DIR = Path(os.environ.get('STUDENTPERF_DATA_DIR') or ROOT.parent/'shared'/'data'/'uci-student-performance')


@pytest.fixture
def params():
    return load_params()


def _uci_dir():
    if not (UCI_DIR/'student-por.csv').exists():
        pytest.skip(f'UCI data directory {UCI_DIR} is absent (set STUDENTPERF_DATA_DIR to run the real-data tests)')
    return UCI_DIR


@pytest.fixture
def uci_dir():
    return _uci_dir()

# One valid student, coded as in the data files (the API and batch tests send it).
STUDENT = {'school': 'GP', 'sex': 'F', 'age': 17, 'address': 'U', 'famsize': 'GT3', 'Pstatus': 'T', 'Medu': 4, 'Fedu': 3,
           'Mjob': 'teacher', 'Fjob': 'other', 'reason': 'course', 'guardian': 'mother', 'traveltime': 1, 'studytime': 2,
           'failures': 0, 'schoolsup': 'no', 'famsup': 'yes', 'paid': 'no', 'activities': 'yes', 'nursery': 'yes',
           'higher': 'yes', 'internet': 'yes', 'romantic': 'no', 'famrel': 4, 'freetime': 3, 'goout': 3, 'Dalc': 1,
           'Walc': 1, 'health': 5, 'absences': 2}

TINY = {'run.quick': True, 'model.candidates': ['logreg'], 'model.ensembles': [], 'model.imbalance': ['none']}


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    "A whole pipeline run on the demo data with only the logistic-regression candidate (seconds): its output folder."
    from studentperf.data import run_prepare
    from studentperf.modeling import run_model
    from studentperf.evaluation import run_evaluate
    from studentperf.handoff import run_handoff
    p, out = load_params(overrides=TINY), tmp_path_factory.mktemp('tiny_run')
    run_prepare(p, out); run_model(p, out, progress=False); run_evaluate(p, out); run_handoff(p, out)
    return out


CLI = [str(Path(sys.executable).parent/'studentperf')]


@pytest.fixture(scope='session')
def por_c_run(tmp_path_factory):
    """The issue's command, quick, run once: `studentperf run --stages prepare,features,model,evaluate --dataset por
    --setup C --quick`. Its output folder and the finished process; the tests that read it share the xdist group
    'uci_por_c' (one run per test session)."""
    uci, out = _uci_dir(), tmp_path_factory.mktemp('por_c_run')
    r = subprocess.run(CLI + ['run', '--stages', 'prepare,features,model,evaluate', '--dataset', 'por', '--setup', 'C',
                              '--data-dir', str(uci), '--out', str(out), '--quick'], capture_output=True, text=True, cwd='/')
    return out, r


# `make test` runs pytest with `-n 2 --dist loadgroup` (pytest-xdist): the tests of a module whose module-scoped fixture
# is expensive (a docs build, a DVC copy, a papermill report, a fitted model, a dask cluster) stay on one worker, so that
# fixture is built once; the other tests are spread one by one. A test's own `xdist_group` mark wins.
GROUPED_MODULES = {'test_docs', 'test_dvc', 'test_report', 'test_serving', 'test_handoff', 'test_scale'}


@pytest.hookimpl(tryfirst=True)   # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        mod = item.module.__name__ if getattr(item, 'module', None) else ''
        if mod in GROUPED_MODULES and not item.get_closest_marker('xdist_group'):
            item.add_marker(pytest.mark.xdist_group(mod))
