"The modeling stage: SMOTE inside the folds only, reproducible metrics, safe model files, the CLI on UCI Mathematics."
import json, operator, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from imblearn.over_sampling import SMOTE
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from studentperf import modeling
from studentperf.config import load_params
from studentperf.data import load_dataset
from studentperf.features import split_xy

CLI = [str(Path(sys.executable).parent/'studentperf')]


class RecordingSMOTE(SMOTE):
    "SMOTE that records how many rows (and how many at-risk rows) each call resamples."
    calls = []

    def fit_resample(self, X, y, **kw):
        RecordingSMOTE.calls.append((len(X), int((np.asarray(y) == 0).sum())))
        return super().fit_resample(X, y, **kw)


@pytest.fixture
def demo_train():
    p = load_params(overrides={'run.quick': True})
    train, test = modeling.holdout_split(load_dataset(p, 'demo').data, p)
    return p, train, test


def test_smote_runs_inside_each_training_fold_only(demo_train, monkeypatch):
    """SMOTE must see exactly the training rows of each CV fold, then the whole training part for the refit: never the
    validation rows, never the hold-out rows. Resampling before the split would record one call on all rows first and
    fold sizes that are not the ones of the original rows."""
    p, train, test = demo_train
    p = load_params(overrides={'run.quick': True, 'model.imbalance': ['smote'], 'model.n_jobs': 1})
    monkeypatch.setattr(modeling, 'SMOTE', RecordingSMOTE)
    RecordingSMOTE.calls = []
    X, y = split_xy(train, p)
    gs = modeling.tune('logreg', X, y, p)
    folds = [(len(tr), int((y.iloc[tr] == 0).sum())) for tr, _ in modeling.cv_splitter(p).split(X, y)]
    n_points = len(gs.cv_results_['params'])
    assert isinstance(gs.best_estimator_.named_steps['sampler'], RecordingSMOTE)
    assert RecordingSMOTE.calls == folds * n_points + [(len(X), int((y == 0).sum()))]
    assert all(n < len(X) for n, _ in RecordingSMOTE.calls[:-1])
    # the hold-out rows are never resampled: scoring the fitted pipeline does not call the sampler
    before = len(RecordingSMOTE.calls)
    modeling.score_all(gs.best_estimator_, *split_xy(test, p))
    assert len(RecordingSMOTE.calls) == before


def test_same_data_params_seed_give_identical_metrics(tmp_path, demo_train):
    "Two runs with the same data, parameters and seed (with n_jobs=2) write identical metrics; another seed differs."
    p0, train, test = demo_train
    o = {'run.quick': True, 'model.candidates': ['forest', 'svm', 'hgb'], 'model.ensembles': ['stacking'],
         'model.quick.feature_variants': {'default': {}}}
    X, y = split_xy(train, p0)
    a = modeling.train_models(X, y, load_params(overrides=o), progress=False)
    b = modeling.train_models(X, y, load_params(overrides=o), progress=False)
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    pd.testing.assert_frame_equal(a.imbalance, b.imbalance, check_exact=True)
    Xt, _ = split_xy(test, p0)
    assert np.array_equal(a.models[a.selected].predict_proba(Xt), b.models[b.selected].predict_proba(Xt))
    # the test can fail: another seed (other folds, other forest) gives other numbers
    c = modeling.train_models(X, y, load_params(overrides={**o, 'run.seed': 7, 'model.candidates': ['forest'], 'model.ensembles': []}),
                              progress=False)
    fa, fc = (t.set_index('model').loc['forest', 'cv_roc_auc_mean'] for t in (a.table, c.table))
    assert fa != fc


def test_model_file_round_trip_and_untrusted_type_refused(tmp_path, demo_train):
    p, train, test = demo_train
    X, y = split_xy(train, p)
    o = {'run.quick': True, 'model.candidates': ['hgb', 'tree', 'svm'], 'model.ensembles': ['stacking'],
         'model.imbalance': ['smote'], 'model.quick.feature_variants': {'default': {}}}
    tr = modeling.train_models(X, y, load_params(overrides=o), progress=False)
    Xt, _ = split_xy(test, p)
    back = modeling.load_model(modeling.save_model(tr.models['stacking'], tmp_path/'m.skops'))
    assert np.array_equal(back.predict_proba(Xt), tr.models['stacking'].predict_proba(Xt))
    # every reviewed type is one our models need (the list stays short and exact)
    import skops.io as sio
    needed = set(sio.get_untrusted_types(file=tmp_path/'m.skops'))
    assert needed <= set(modeling.TRUSTED_TYPES)
    assert set(modeling.TRUSTED_TYPES) - needed == set(), set(modeling.TRUSTED_TYPES) - needed
    # a file with a type nobody reviewed is refused, naming the type
    bad = Pipeline([('f', FunctionTransformer(operator.neg)), ('clf', LogisticRegression())]).fit(np.eye(4), [0, 1, 0, 1])
    modeling.save_model(bad, tmp_path/'bad.skops')
    with pytest.raises(modeling.UntrustedModelError, match=r'_operator\.neg'):
        modeling.load_model(tmp_path/'bad.skops')
    with pytest.raises(FileNotFoundError, match='run the model stage'):
        modeling.load_model(tmp_path/'absent.skops')


def test_cli_model_stage_on_uci_mathematics(uci_dir, tmp_path):
    "The quick grid end to end: prepare, features and model on UCI Mathematics, setup C."
    r = subprocess.run(CLI + ['run', '--stages', 'prepare,features,model', '--dataset', 'mat', '--setup', 'C',
                              '--data-dir', str(uci_dir), '--out', str(tmp_path), '--quick'],
                       capture_output=True, text=True, cwd='/')
    assert r.returncode == 0, r.stderr[-3000:]
    t = pd.read_csv(tmp_path/'metrics'/'model_comparison.csv')
    assert set(t['model']) == {'baseline', 'logreg', 'knn', 'tree', 'forest', 'svm', 'hgb', 'voting', 'stacking'}
    for m in modeling.SEARCH_METRICS:
        assert {f'cv_{m}_mean', f'cv_{m}_std', f'test_{m}'} <= set(t.columns)
    assert t['selected'].sum() == 1 and t.loc[t.selected, 'model'].item() != 'baseline'
    base = t.set_index('model').loc['baseline']
    assert base['cv_roc_auc_mean'] == 0.5 and abs(base['cv_accuracy_mean'] - 0.671) < 0.01   # always 'pass' on mat
    tm = json.loads((tmp_path/'metrics'/'train_metrics.json').read_text())
    assert tm['selected'] == t.loc[t.selected, 'model'].item() and (tm['dataset'], tm['setup'], tm['quick']) == ('mat', 'C', True)
    s = pd.read_csv(tmp_path/'data'/'split.csv')
    assert sorted(s['row']) == list(range(395)) and (s['part'] == 'test').sum() == 79
    df = pd.read_csv(tmp_path/'data'/'student_performance_cleaned.csv')
    test_rows = s.loc[s.part == 'test', 'row']
    assert abs(df.loc[test_rows, 'pass'].mean() - df['pass'].mean()) < 0.02     # stratified
    model = modeling.load_model(tmp_path/'models'/'model.skops')
    from studentperf.data import read_cleaned
    p = load_params(overrides={'run.setup': 'C', 'run.dataset': 'mat'})
    X, y = split_xy(read_cleaned(tmp_path, p), p)
    proba = model.predict_proba(X.loc[test_rows])[:, 1]
    from sklearn.metrics import roc_auc_score
    assert abs(roc_auc_score(y.loc[test_rows], proba) - t.loc[t.selected, 'test_roc_auc'].item()) < 1e-6
    assert (tmp_path/'metrics'/'imbalance_comparison.csv').exists() and (tmp_path/'reports'/'03_modeling.html').exists()
