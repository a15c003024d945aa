"""params.yaml is loaded once into typed, validated sections: wrong keys and values are refused at load (file, dotted key, value,
what was expected), overrides from the CLI, papermill and `load_params` go through the same checks, and the data directory is a
parameter like any other."""
import json, os, shutil, subprocess, sys, typing
from pathlib import Path
import pytest
from studentperf import config, data, drift, evaluation, features, modeling, monitoring, runner
from studentperf.config import ParamsError, load_params, typed_params
from conftest import ROOT, cli_here

CLI = [str(Path(sys.executable).parent/'studentperf')]
PARAMS = str(ROOT/'params.yaml')


def test_the_project_params_validate_and_keep_their_shape():
    p = load_params()
    raw = config.read_yaml((ROOT/'params.yaml').read_text())
    assert {k: v for k, v in p.items() if k != '_meta'} == raw          # the plain dict, values as in the YAML: no defaults added
    t = typed_params(p)
    assert (t.model.cv_folds, t.model.quick.cv_folds, t.run.setup, t.engine.scheduler, t.schema_) == (5, 3, 'C', None, 'uci')
    assert t.model.candidates == p['model']['candidates'] and t.evaluate.threshold.min == 0.8


def test_the_name_sets_match_the_modules_that_define_them():
    "config repeats a few sets of names (it imports no other module): they must not drift apart."
    assert config._CANDIDATES == tuple(modeling.ESTIMATORS)
    assert set(config._SEARCH_METRICS) == set(modeling.SEARCH_METRICS)
    assert list(config._REPORT_METRICS) == list(evaluation.REPORT_METRICS)
    assert list(config._THRESHOLD_METRICS) == list(evaluation.THRESHOLD_METRICS)
    assert config._ENGINEERED_OPS == tuple(features.ENGINEERED_OPS)
    assert config._CALIBRATION_METHODS == tuple(modeling.CALIBRATION_METHODS)
    assert config._SELECTION_RULES == tuple(modeling.SELECTION_RULES)
    assert list(config._TARGET_KINDS) == list(data.TARGET_KINDS)
    fp = config.FeaturesParams.model_fields
    for k, allowed in features.CHOICES.items(): assert typing.get_args(fp[k].annotation) == allowed, k
    assert config.PerformanceParams().metrics == drift.PERF_METRICS
    m = config.MonitoringParams()
    assert {k: getattr(m, k) for k in monitoring.MONITORING_DEFAULTS} == monitoring.MONITORING_DEFAULTS


@pytest.mark.parametrize('key,value,expected', [
    ('model.cv_folds', 'five', 'expected a whole number >= 2'),
    ('model.cv_folds', False, 'expected a whole number >= 2, not true/false'),   # lax pydantic would take false as 0
    ('run.quick', 3, 'expected true or false'),
    ('model.test_size', 1.5, 'expected a number in (0, 1)'),
    ('evaluate.threshold.min', 1.2, 'expected a number in [0, 1]'),
    ('model.candidates', ['logreg', 'mlp'], "unknown candidate(s) ['mlp']"),
    ('model.imbalance', ['none', 'undersample'], "unknown strategy ['undersample']"),
    ('engine.scheduler', 'tcp://host', "expected null, 'local' or an address like tcp://host:8786"),
    ('engine.scheduler', '10.0.0.5:8786', "expected null, 'local' or an address like tcp://host:8786"),
    ('model.metric', 'auc', "expected 'roc_auc', 'accuracy', 'balanced_accuracy' or 'f1_at_risk'"),
    ('schemas.uci.target.pass_treshold', 12, "unknown parameter 'schemas.uci.target.pass_treshold'"),
])
def test_a_wrong_override_is_refused_at_load(key, value, expected):
    with pytest.raises(ParamsError) as e: load_params(overrides={key: value})
    assert str(e.value).startswith(f"{PARAMS}: {key} = {value!r}: {expected}") and str(e.value).endswith('(set by an override)')
    assert isinstance(e.value, ValueError) and e.value.problems[0][1] == key


def test_a_wrong_file_is_refused_with_every_problem(tmp_path):
    f = tmp_path/'params.yaml'
    f.write_text((ROOT/'params.yaml').read_text().replace('  cv_folds: 5 ', '  cv_folds: five ').replace('  setup: C ', '  setup: D ')
                 .replace('  workers: 2 ', '  workers: 2\n  threads: 4 '))
    with pytest.raises(ParamsError) as e: load_params(f)
    lines = str(e.value).splitlines()
    assert f"{f}: model.cv_folds = 'five': expected a whole number >= 2" in lines
    assert f"{f}: engine.threads = 4: unknown parameter 'engine.threads'; section engine has: scheduler, workers, memory_limit, connect_timeout, blocksize" in lines
    assert len(lines) == 2                                     # run.setup is checked against the schema's setups once the sections are valid
    f.write_text(f.read_text().replace('  cv_folds: five ', '  cv_folds: 5 ').replace('  threads: 4 ', ''))
    with pytest.raises(ParamsError, match=r"run.setup = 'D': expected a setup of schema 'uci' \(schemas.uci.setups\): A, B, C"): load_params(f)


def run_cli(*args, env=None, cwd=None):
    return subprocess.run(CLI + list(map(str, args)), capture_output=True, text=True, env=env, cwd=cwd)


@pytest.mark.parametrize('setting,expected', [
    ('model.cv_folds=five', "model.cv_folds = 'five': expected a whole number >= 2 (set by an override)"),
    ('run.quick=3', 'run.quick = 3: expected true or false (set by an override)'),
    ('engine.scheduler=tcp://nowhere', "engine.scheduler = 'tcp://nowhere': expected null, 'local' or an address"),
])
def test_the_cli_refuses_a_wrong_value_before_any_stage_runs(tmp_path, capsys, setting, expected):
    r = cli_here(capsys, 'run', '--set', setting, '--out', tmp_path/'out')
    assert r.returncode == 1 and f"studentperf: error: {PARAMS}: {expected}" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path/'out').exists()                      # nothing ran, nothing was written
    assert 'Traceback' not in r.stderr


def test_report_refuses_a_wrong_value_too(tmp_path, capsys):
    r = cli_here(capsys, 'report', '--set', 'model.cv_folds=false', '--out', tmp_path)
    assert r.returncode == 1 and "model.cv_folds = False: expected a whole number >= 2, not true/false" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_data_dir_is_an_override_and_the_runner_leaves_the_environment_alone(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(runner, 'run_stage', lambda s, out, overrides, params_file, **kw: seen.append(overrides))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('STUDENTPERF_DATA_DIR', '/from/env')
    (tmp_path/'uci').mkdir(); (tmp_path/'uci'/'student-mat.csv').touch()   # the runner checks the data file before any stage
    before = dict(os.environ)
    runner.run(['prepare', 'features'], tmp_path/'out', {'run.dataset': 'mat'}, None, 'uci')
    assert dict(os.environ) == before
    assert seen == [{'run.dataset': 'mat', 'data.data_dir': str(tmp_path/'uci')}] * 2   # absolute, to every stage
    p = load_params(overrides=seen[0])
    assert data.data_dir(p) == tmp_path/'uci'                         # the flag wins over $STUDENTPERF_DATA_DIR
    assert data.data_dir(load_params()) == Path('/from/env')          # which wins over params.yaml


def test_a_missing_data_file_is_refused_before_any_stage_runs(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(runner, 'run_stage', lambda s, *a, **kw: seen.append(s))
    with pytest.raises(data.DataError, match='studentperf data fetch'):
        runner.run(['prepare'], tmp_path/'out', {'run.dataset': 'mat'}, None, tmp_path/'nope')
    assert seen == []


def test_cli_data_dir_reaches_the_stage_notebook_and_wins_over_the_environment(tmp_path):
    "The demo file stands in for student-mat.csv (same columns); $STUDENTPERF_DATA_DIR points elsewhere."
    d = tmp_path/'uci'; d.mkdir()
    shutil.copy(data.demo_path(load_params()), d/'student-mat.csv')
    env = {**os.environ, 'STUDENTPERF_DATA_DIR': str(tmp_path/'nowhere')}
    r = run_cli('run', '--stages', 'prepare', '--dataset', 'mat', '--data-dir', 'uci', '--out', tmp_path/'out', env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path/'out'/'data'/'data_report.json').read_text())
    assert rep['dataset'] == 'mat' and rep['rows_raw'] == 666
    nb = (tmp_path/'out'/'reports'/'01_data_prep.ipynb').read_text()
    assert str(d.resolve()) in nb                                                # passed as data.data_dir in the injected overrides
