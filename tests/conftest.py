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
