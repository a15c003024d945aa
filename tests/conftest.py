"Shared fixtures: the UCI data directory (skipped with a visible reason when absent) and the project's parameters."
import json, logging, os, subprocess, sys
from pathlib import Path
import pytest
from studentperf.config import load_params, project_root
from studentperf.modeling import SMALL_MODEL

ROOT = project_root()
UCI_DIR = Path(os.environ.get('STUDENTPERF_DATA_DIR') or ROOT.parent/'shared'/'data'/'uci-student-performance')


@pytest.fixture(autouse=True)
def environment_restored():
    "Code under test may set environment variables for the processes it starts (`serve` does): no test sees another's."
    before = dict(os.environ)
    yield
    own = {'PYTEST_CURRENT_TEST'}   # pytest's own, changed by every phase: not the test's doing
    for k in set(os.environ) - set(before) - own: del os.environ[k]   # only what changed: other threads may read the rest
    for k, v in before.items():
        if k not in own and os.environ.get(k) != v: os.environ[k] = v


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

TINY = SMALL_MODEL   # a quick logistic regression only


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


def cli_here(capsys, *args) -> subprocess.CompletedProcess:
    """`studentperf ARGS` run in this process: the `runner.main` the console script calls, without the new interpreter's
    seconds of imports. For the CLI's quick paths (refusals, a fetch); end-to-end runs still start the console script
    (`CLI`). Returns what `subprocess.run` would: the exit code and the captured stdout and stderr."""
    from studentperf import runner
    lg = logging.getLogger('studentperf'); level = lg.level   # main sets the package's log level: keep this process's
    try: code = runner.main([str(a) for a in args])
    except SystemExit as e: code = e.code
    finally: lg.setLevel(level)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(['studentperf', *map(str, args)], code, out.out, out.err)


POR_C_MODELS = {'model.candidates': ['logreg', 'knn', 'tree', 'svm', 'hgb'], 'model.ensembles': ['voting']}


@pytest.fixture(scope='session')
def por_c_run(tmp_path_factory):
    """The real-data run, quick, once: `studentperf run --stages prepare,features,model,evaluate --dataset por
    --setup C --quick` without the two slowest models (forest, stacking: `POR_C_MODELS`); every candidate and both
    ensembles run on these data in test_report's full report and on the demo data in the modeling notebook's own run.
    Its output folder and the finished process; the tests that read it share the xdist group 'uci_por_c' (one run
    per test session) and are `slow`."""
    uci, out = _uci_dir(), tmp_path_factory.mktemp('por_c_run')
    sets = [a for k, v in POR_C_MODELS.items() for a in ('--set', f'{k}={json.dumps(v)}')]
    r = subprocess.run(CLI + ['run', '--stages', 'prepare,features,model,evaluate', '--dataset', 'por', '--setup', 'C',
                              '--data-dir', str(uci), '--out', str(out), '--quick', *sets], capture_output=True, text=True, cwd='/')
    return out, r


# `make test` runs pytest with `-n 2 --dist loadgroup` (pytest-xdist): the tests of a module whose module-scoped fixture
# is expensive (a docs build, a DVC copy, a papermill report, a fitted model, a dask cluster) stay on one worker, so that
# fixture is built once; the other tests are spread one by one. A test's own `xdist_group` mark wins.
GROUPED_MODULES = {'test_docs', 'test_dvc', 'test_report', 'test_serving', 'test_handoff', 'test_scale', 'test_other_school',
                   'test_roster'}

# `make test` runs what is not marked `slow` (under 5 minutes on 2 cores); `make test-slow` runs the rest, and CI
# runs both. Slow: the docs build (also `make docs`), the DVC pipeline in a git copy, report folders (papermill runs of
# several stages), Dask clusters, the real-data runs of several stages (conftest.por_c_run) and the tests marked
# `@pytest.mark.slow` (whole pipelines: full report, retraining).
SLOW_MODULES = {'test_docs', 'test_dvc', 'test_report', 'test_scale'}


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: end-to-end runs of minutes; `make test-slow` (CI runs it), not `make test`')


@pytest.hookimpl(tryfirst=True)   # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    # the notebooks first among the tests that run one by one: the long ones start early, and short tests fill the end
    items.sort(key=lambda item: item.path.name != 'test_notebooks.py')
    for item in items:
        mod = item.module.__name__ if getattr(item, 'module', None) else ''
        if mod in GROUPED_MODULES and not item.get_closest_marker('xdist_group'):
            item.add_marker(pytest.mark.xdist_group(mod))
        if mod in SLOW_MODULES or 'por_c_run' in getattr(item, 'fixturenames', ()):
            item.add_marker(pytest.mark.slow)


def pytest_xdist_node_collection_finished(node, ids):
    """On the xdist controller: with `--dist loadgroup` the tests of a grouped module must arrive as 'id@group'. With
    pytest 9.2 they do not (pytest-dev/pytest-xdist#1386): the groups are silently ignored and every worker builds
    the expensive fixtures again, so refuse to run rather than run slow."""
    if node.config.getvalue('dist') != 'loadgroup': return
    lost = [i for i in ids if Path(i.split('::')[0]).stem in GROUPED_MODULES and '@' not in i.rsplit('::', 1)[-1]]
    if lost: raise pytest.UsageError(
        f"pytest-xdist's --dist loadgroup ignores xdist_group marks with this pytest ({lost[0]} has no '@group' suffix; "
        "pytest-dev/pytest-xdist#1386): install pytest<9.2, as the dev extra in settings.ini pins it")
