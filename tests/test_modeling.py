"The modeling stage: SMOTE inside the folds only, reproducible metrics, safe model files, the model stage of the CLI on UCI Portuguese."
import json, operator
import numpy as np
import pandas as pd
import pytest
from imblearn.over_sampling import SMOTE
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from studentperf import modeling
from conftest import POR_C_MODELS
from studentperf.config import load_params
from studentperf.data import load_dataset
from studentperf.features import split_xy


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
    """Two runs with the same data, parameters and seed, in worker processes (n_jobs=2, no shared fits), write identical
    metrics, and the same as one process sharing its fits (n_jobs=1); another seed differs."""
    p0, train, test = demo_train
    o = {'run.quick': True, 'model.quick.n_jobs': 2,
         'model.candidates': ['tree', 'forest'], 'model.ensembles': ['voting'], 'model.imbalance': ['smote'],
         'model.quick.feature_variants': {'default': {}},   # the seeded parts: folds, trees, forest, SMOTE, calibration
         'model.quick.grids': {'tree': {'max_depth': [3]}, 'forest': {'n_estimators': [10], 'min_samples_leaf': [5]}}}
    X, y = split_xy(train, p0)
    a = modeling.train_models(X, y, load_params(overrides=o), progress=False)
    b = modeling.train_models(X, y, load_params(overrides=o), progress=False)
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    pd.testing.assert_frame_equal(a.imbalance, b.imbalance, check_exact=True)
    Xt, _ = split_xy(test, p0)
    assert np.array_equal(a.models[a.selected].predict_proba(Xt), b.models[b.selected].predict_proba(Xt))
    assert modeling.model_settings(load_params(overrides=o))['n_jobs'] == 2
    one = modeling.train_models(X, y, load_params(overrides={**o, 'model.quick.n_jobs': 1}), progress=False)
    pd.testing.assert_frame_equal(one.table, a.table, check_exact=True)
    assert np.array_equal(one.model.predict_proba(Xt), a.model.predict_proba(Xt))
    # the test can fail: another seed (other folds, other forest) gives other numbers
    c = modeling.train_models(X, y, load_params(overrides={**o, 'run.seed': 7, 'model.candidates': ['forest'], 'model.ensembles': []}),
                              progress=False)
    fa, fc = (t.set_index('model').loc['forest', 'cv_roc_auc_mean'] for t in (a.table, c.table))
    assert fa != fc


def test_model_file_round_trip_and_untrusted_type_refused(tmp_path, demo_train):
    p, train, test = demo_train
    X, y = split_xy(train, p)
    o = {'run.quick': True, 'model.candidates': ['hgb', 'tree', 'svm'], 'model.ensembles': ['stacking'],
         'model.imbalance': ['smote'], 'model.quick.feature_variants': {'default': {}},
         'model.quick.calibration': {'methods': ['none']}}   # the stacking model's file is checked, not the calibration
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


@pytest.mark.xdist_group('uci_por_c')
def test_cli_model_stage_on_uci(por_c_run):
    """The quick grid end to end on real data: the model stage of `studentperf run ... --dataset por --setup C --quick`
    (the one run of conftest.por_c_run, shared with the features and evaluation tests)."""
    tmp_path, r = por_c_run
    assert r.returncode == 0, r.stderr[-3000:]
    t = pd.read_csv(tmp_path/'metrics'/'model_comparison.csv')
    assert set(t['model']) == {'baseline', *POR_C_MODELS['model.candidates'], *POR_C_MODELS['model.ensembles']}
    for m in modeling.SEARCH_METRICS:
        assert {f'cv_{m}_mean', f'cv_{m}_std', f'test_{m}'} <= set(t.columns)
    assert t['selected'].sum() == 1 and t.loc[t.selected, 'model'].item() != 'baseline'
    base = t.set_index('model').loc['baseline']
    assert base['cv_roc_auc_mean'] == 0.5 and abs(base['cv_accuracy_mean'] - 0.846) < 0.01   # always 'pass' on por
    tm = json.loads((tmp_path/'metrics'/'train_metrics.json').read_text())
    assert tm['selected'] == t.loc[t.selected, 'model'].item() and (tm['dataset'], tm['setup'], tm['quick']) == ('por', 'C', True)
    s = pd.read_csv(tmp_path/'data'/'split.csv')
    assert sorted(s['row']) == list(range(649)) and (s['part'] == 'test').sum() == 130
    df = pd.read_csv(tmp_path/'data'/'student_performance_cleaned.csv')
    test_rows = s.loc[s.part == 'test', 'row']
    assert abs(df.loc[test_rows, 'pass'].mean() - df['pass'].mean()) < 0.02     # stratified
    model = modeling.load_model(tmp_path/'models'/'model.skops')
    from studentperf.data import read_cleaned
    p = load_params(overrides={'run.setup': 'C', 'run.dataset': 'por'})
    X, y = split_xy(read_cleaned(tmp_path, p), p)
    proba = model.predict_proba(X.loc[test_rows])[:, 1]
    from sklearn.metrics import roc_auc_score
    assert abs(roc_auc_score(y.loc[test_rows], proba) - t.loc[t.selected, 'test_roc_auc'].item()) < 1e-6
    assert (tmp_path/'metrics'/'imbalance_comparison.csv').exists() and (tmp_path/'reports'/'03_modeling.html').exists()


# --- the pre-registered selection rule (issue 14): ranking first, then calibrated probabilities ---

def _comparison(**cols):
    t = pd.DataFrame({'model': ['baseline', 'logreg', 'forest', 'hgb', 'stacking'], 'kind': ['baseline', 'candidate', 'candidate', 'candidate', 'ensemble'],
                      'cv_roc_auc_mean': [.5, .78, .82, .83, .84], 'cv_roc_auc_std': [0, .03, .03, .03, .03],   # 1 SE (5 folds): .0134
                      'cv_brier_mean': [.2, .09, .13, .15, .17], 'cv_brier_recal_mean': [.2, .09, .125, .14, .16]})
    return t.assign(**cols)


def test_auc_then_brier_prefers_calibrated_probabilities_within_one_se_of_the_best_auc():
    p = load_params(overrides={'model.selection': 'auc_then_brier', 'model.cv_folds': 5})
    t = _comparison()
    assert modeling.select(t, rule='best') == 'stacking'                 # best AUC ...
    assert modeling.select_by(t, p) == 'hgb'                             # ... loses to hgb (within 1 SE, Brier .14 < .16)
    # forest's AUC (.82) is outside the band (.84 - .0134): its better Brier score never makes it win, nor logreg's (best of all)
    assert modeling.select_by(t.assign(cv_brier_recal_mean=[.2, .01, .02, .14, .16]), p) == 'hgb'
    # a wider band (noisier best) lets forest in, and then its Brier score wins
    assert modeling.select_by(t.assign(cv_roc_auc_std=[0, .03, .03, .03, .06]), p) == 'forest'
    # the recalibrated Brier counts: a shift the calibration step removes is not held against a model
    assert modeling.select_by(t.assign(cv_brier_recal_mean=[.2, .09, .125, .14, .10]), p) == 'stacking'
    # the one_se rule on the same table ignores probabilities: the simplest within 1 SE
    assert modeling.select_by(t, load_params(overrides={'model.selection': 'one_se', 'model.cv_folds': 5})) == 'hgb'


def test_the_selection_rule_is_declared_in_params():
    p = load_params()
    assert p['model']['selection'] in modeling.SELECTION_RULES
    with pytest.raises(Exception, match='selection'):
        load_params(overrides={'model.selection': 'lowest_brier'})


def test_train_models_records_the_brier_scores_it_selects_by(demo_train):
    p0, train, _ = demo_train
    p = load_params(overrides={'run.quick': True, 'model.candidates': ['logreg', 'tree'], 'model.ensembles': [], 'model.n_jobs': 1,
                               'model.selection': 'auc_then_brier', 'model.quick.feature_variants': {'default': {}},
                               'model.quick.calibration': {'methods': ['none']}})
    tr = modeling.train_models(*split_xy(train, p), p, progress=False)
    t = tr.table.set_index('model')
    assert {'cv_brier_mean', 'cv_brier_recal_mean'} <= set(t.columns) and (t['cv_brier_mean'] > 0).all()
    assert t.loc['baseline', 'cv_brier_mean'] > t.loc['logreg', 'cv_brier_mean']
    auc = t['cv_roc_auc_mean'].drop('baseline')
    ok = auc[auc >= auc.max() - t.loc[auc.idxmax(), 'cv_roc_auc_std'] / np.sqrt(3)].index   # within one standard error (3 folds)
    assert tr.selected == t.loc[ok, 'cv_brier_mean'].idxmin()   # calibration methods [none]: the raw Brier, not the recalibrated one


# --- pooling both subjects: no student on both sides of a split ---

def _no_group_on_both_sides(groups, splits):
    for a, b in splits:
        assert not set(np.asarray(groups)[a]) & set(np.asarray(groups)[b])


def test_pooled_splits_keep_each_student_on_one_side_synthetic():
    p = load_params(overrides={'run.quick': True})
    block = p['schemas'][p['schema']]
    match = list(block['columns'])[:4]   # a short key with few values: some students share it (the real rule: the test below)
    block['pool'] = {'match': match, 'subject_column': 'subject'}
    rng = np.random.default_rng(3)
    students = pd.DataFrame({c: rng.integers(0, 3, 120) for c in match})    # small value ranges: some students share keys
    a = students.iloc[:80].assign(**{'pass': rng.integers(0, 2, 80)})
    b = students.iloc[40:].assign(**{'pass': rng.integers(0, 2, 80)})
    pooled = modeling.pool_tables({'a': a, 'b': b}, p)
    g = modeling.pool_groups(pooled, p)
    assert g.nunique() < 120 and (pooled.groupby(g)['subject'].nunique() == 2).sum() >= 30
    _no_group_on_both_sides(g, modeling.pooled_splits(pooled, p, 5, 0))
    _no_group_on_both_sides(g, modeling.cv_splitter(p, grouped=True).split(pooled, pooled['pass'], g))
    tr, te = modeling.holdout_split(pooled, p, groups=g)
    assert not set(g[tr.index]) & set(g[te.index]) and len(tr) + len(te) == len(pooled)
    # the check can fail: plain stratified folds do put a student on both sides
    with pytest.raises(AssertionError):
        _no_group_on_both_sides(g, modeling.StratifiedKFold(5, shuffle=True, random_state=0).split(pooled, pooled['pass']))


def test_pooled_splits_on_the_real_files(uci_dir):
    p = load_params(overrides={'data.data_dir': str(uci_dir)})
    if not p['schemas'][p['schema']].get('pool'): pytest.skip('params.yaml declares no pool block for the active schema')
    tabs = {s: load_dataset(p, s).data for s in ('mat', 'por')}
    rep = modeling.overlap_report(tabs, modeling.pool_settings(p)['match'])
    assert rep['inner_merge_rows'] == 382                        # the UCI documentation's figure
    assert (rep['rows_with_counterpart'], rep['groups_in_both'], rep['one_to_one_pairs']) == ({'mat': 370, 'por': 374}, 366, 358)
    pooled = modeling.pool_tables(tabs, p)
    g = modeling.pool_groups(pooled, p)
    _no_group_on_both_sides(g, modeling.pooled_splits(pooled, p, 10, 42))
    pp = modeling.pool_params(p, ['mat', 'por'])
    X, y = split_xy(pooled, pp)
    assert 'subject' in X.columns or modeling.pool_settings(p)['subject_column'] in X.columns
    _no_group_on_both_sides(g, modeling.cv_splitter(pp, grouped=True).split(X, y, g))


def test_pooled_training_groups_the_calibration_and_stacking_folds(monkeypatch):
    """`train_models(..., groups=)` on a pooled table: the folds the calibration step and the stacking meta-model make on
    their own (inside the search's and the calibration comparison's folds too) never put a student on both sides."""
    p = load_params(overrides={'run.quick': True, 'model.candidates': ['logreg', 'tree'], 'model.ensembles': ['stacking'],
                               'model.imbalance': ['none'], 'model.quick.calibration': {'methods': ['sigmoid'], 'cv': 3, 'ensemble': False},
                               'model.quick.feature_variants': {'default': {}}})
    demo = load_dataset(p, 'demo').data.drop_duplicates().reset_index(drop=True)
    pooled = modeling.pool_tables({'a': demo.iloc[:300], 'b': demo.iloc[150:450]}, p)   # rows 150-299 in both subjects
    pp = modeling.pool_params(p, ['a', 'b'])
    g = modeling.pool_groups(pooled, pp)
    assert (pooled.groupby(g)['subject'].nunique() == 2).sum() >= 100
    seen, real = [], modeling.RowGroupKFold.split
    def recording(self, X, y=None, groups=None):
        for a, b in real(self, X, y, groups):
            seen.append(len(X)); _no_group_on_both_sides(g[X.index], [(a, b)]); yield a, b
    monkeypatch.setattr(modeling.RowGroupKFold, 'split', recording)
    X, y = split_xy(pooled, pp)
    with pytest.raises(ValueError, match='must have the index of `X`'):   # groups out of line with the rows: refused up front
        modeling.train_models(X, y, pp, progress=False, groups=g.iloc[::-1])
    tr = modeling.train_models(X, y, pp, progress=False, groups=g)
    assert type(tr.models['stacking'].cv).__name__ == 'RowGroupKFold' and type(tr.model.cv).__name__ == 'RowGroupKFold'
    assert len(set(seen)) > 1 and len(X) in seen        # nested subsets (the CV folds) and the whole training part


def test_the_calibration_methods_share_their_refits(demo_train, monkeypatch):
    """In one process the calibration comparison fits each set of rows once: 3 comparison folds x (3 calibration folds
    + the whole fold) = 12 fits for `none`, `sigmoid` and `isotonic` instead of 3 + 12 + 12 = 27, with exactly the table
    and the out-of-fold probabilities of the bare pipeline refitted every time (no wrapper at all)."""
    _, train, _ = demo_train
    p = load_params(overrides={'run.quick': True, 'model.quick.calibration': {'methods': ['none', 'sigmoid', 'isotonic'], 'cv': 3, 'ensemble': False}})
    assert modeling.model_settings(p)['n_jobs'] == 1 and modeling.model_settings(p)['cv_folds'] == 3
    X, y = split_xy(train, p)
    model = modeling.candidate_pipeline('logreg', p).set_params(sampler=modeling.make_sampler(p)).fit(X, y)
    made, asked, real_fit = [], [], modeling.SharedFits.fit
    def counting(self, X, y, **kw):
        n = len(self.store)
        out = real_fit(self, X, y, **kw)
        asked.append(1); made.extend([1] if len(self.store) > n else []); return out
    with monkeypatch.context() as m:
        m.setattr(modeling.SharedFits, 'fit', counting)
        table, oofs = modeling.compare_calibrations(model, X, y, p, return_oof=True)
    assert (len(made), len(asked)) == (12, 27)
    monkeypatch.setattr(modeling, 'SharedFits', lambda est, store=None: est)   # the reference: the bare pipeline
    bare, bare_oofs = modeling.compare_calibrations(model, X, y, p, return_oof=True)
    pd.testing.assert_frame_equal(table, bare, check_exact=True)
    for meth in ('none', 'sigmoid', 'isotonic'): np.testing.assert_array_equal(oofs[meth].proba, bare_oofs[meth].proba)


def test_the_ensemble_and_calibration_steps_share_their_refits(demo_train, monkeypatch, tmp_path):
    """`train_models` keeps one store of fits for the ensemble steps and the calibration step: with 3 folds everywhere,
    the selected stacking ensemble is fitted 13 times instead of 20 (its step: 3 CV folds + all rows; the comparison's
    `none` takes the 3 CV fits; the chosen sigmoid's final refit takes all 4), and everything `train_models` returns is
    exactly what the bare models, refitted every time, give; the saved model carries no wrapper."""
    _, train, _ = demo_train
    p = load_params(overrides={'run.quick': True, 'model.candidates': ['logreg', 'tree'], 'model.ensembles': ['stacking'],
                               'model.quick.calibration': {'methods': ['none', 'sigmoid', 'isotonic'], 'cv': 3, 'ensemble': False}})
    m = modeling.model_settings(p)
    assert (m['n_jobs'], m['cv_folds'], m['calibration']['cv']) == (1, 3, 3)
    X, y = split_xy(train, p)
    real_select = modeling.select_by   # the model step picks the stacking ensemble (the feature step chooses as usual)
    monkeypatch.setattr(modeling, 'select_by', lambda table, params, simplicity=None:
                        'stacking' if 'stacking' in set(table['model']) else real_select(table, params, simplicity))
    monkeypatch.setattr(modeling, 'choose_calibration', lambda table: 'sigmoid')
    made, real_fit = {}, modeling.SharedFits.fit
    def counting(self, X, y, **kw):
        n = len(self.store)
        out = real_fit(self, X, y, **kw)
        name = type(self.estimator).__name__
        made[name] = made.get(name, 0) + (len(self.store) > n); return out
    with monkeypatch.context() as mp:
        mp.setattr(modeling.SharedFits, 'fit', counting)
        tr = modeling.train_models(X, y, p, progress=False)
    assert made == {'StackingClassifier': 13, 'DummyClassifier': 4}
    assert tr.calibration_method == 'sigmoid' and tr.model.calibrated_classifiers_[0].estimator is tr.models['stacking']
    loaded = modeling.load_model(modeling.save_model(tr.model, tmp_path / 'model.skops'))   # refuses any untrusted type
    np.testing.assert_array_equal(loaded.predict_proba(X), tr.model.predict_proba(X))

    monkeypatch.setattr(modeling, 'SharedFits', lambda est, store=None: est)   # the reference: the bare models, no wrapper
    monkeypatch.setattr(modeling, 'unshared', lambda model: model)
    bare = modeling.train_models(X, y, p, progress=False)
    pd.testing.assert_frame_equal(tr.table, bare.table, check_exact=True)
    pd.testing.assert_frame_equal(tr.calibration, bare.calibration, check_exact=True)
    np.testing.assert_array_equal(tr.oof.proba, bare.oof.proba)
    np.testing.assert_array_equal(tr.model.predict_proba(X), bare.model.predict_proba(X))
    for name in ('stacking', 'baseline'):
        np.testing.assert_array_equal(tr.models[name].predict_proba(X), bare.models[name].predict_proba(X))
