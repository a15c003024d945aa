"Shared fixtures: the UCI data directory (skipped with a visible reason when absent) and the project's parameters."
import os
from pathlib import Path
import pytest
from studentperf.config import load_params, project_root

ROOT = project_root()
UCI_DIR = Path(os.environ.get('STUDENTPERF_DATA_DIR') or ROOT.parent/'shared'/'data'/'uci-student-performance')


@pytest.fixture
def params():
    return load_params()


@pytest.fixture
def uci_dir():
    if not (UCI_DIR/'student-por.csv').exists():
        pytest.skip(f'UCI data directory {UCI_DIR} is absent (set STUDENTPERF_DATA_DIR to run the real-data tests)')
    return UCI_DIR

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
