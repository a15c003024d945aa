"""Calibrated P(pass) (issue 14): recalibrating a pipeline whose probabilities SMOTE or class weights distort lowers
the held-out Brier score; the model stage records its choice, fits nothing on the hold-out rows, and saves a model
that loads safely and predicts probabilities; evaluation and the model card report calibration."""
import json
import numpy as np
import pandas as pd
import pytest
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.model_selection import train_test_split
from studentperf import modeling
from studentperf.config import load_params
from studentperf.evaluation import CALIBRATION_METRICS, calibration_metrics

QUICK = {'run.quick': True, 'model.n_jobs': 1}


def _students(n=1500, seed=0):
    "Generated rows, about 80% pass, with a known logistic relation."
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 3)), columns=['a', 'b', 'c'])
    return X, pd.Series((rng.random(n) < expit(1.8 + 1.2 * X.a - .6 * X.b)).astype(int))


@pytest.mark.parametrize('imbalance', ['smote', 'balanced'])
def test_calibration_lowers_the_heldout_brier_score(imbalance):
    X, y = _students()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=.4, stratify=y, random_state=0)
    pipe = Pipeline([('sampler', SMOTE(random_state=0) if imbalance == 'smote' else 'passthrough'),
                     ('clf', LogisticRegression(class_weight='balanced' if imbalance == 'balanced' else None))])
    params = load_params(overrides={**QUICK, 'model.quick.calibration': {'methods': ['none', 'sigmoid'], 'cv': 3, 'ensemble': False}})
    raw = modeling.calibrated(pipe, 'none', params).fit(Xtr, ytr)
    cal = modeling.calibrated(pipe, 'sigmoid', params).fit(Xtr, ytr)
    p_raw, p_cal = raw.predict_proba(Xte)[:, 1], cal.predict_proba(Xte)[:, 1]
    assert p_raw.mean() < yte.mean() - .15                       # the strategy visibly distorts P(pass) ...
    assert brier_score_loss(yte, p_cal) < brier_score_loss(yte, p_raw) - .02   # ... and calibration repairs it
    m_raw, m_cal = calibration_metrics(yte, p_raw, ytr.mean()), calibration_metrics(yte, p_cal, ytr.mean())
    assert m_cal['ece'] < m_raw['ece'] and abs(m_cal['calibration_intercept']) < abs(m_raw['calibration_intercept'])
    t = modeling.compare_calibrations(pipe, Xtr, ytr, params)    # the model stage's rule, on training rows only
    assert modeling.choose_calibration(t) == 'sigmoid'
    assert t.set_index('method').loc['none', 'cv_brier_mean'] > t.set_index('method').loc['base rate', 'cv_brier_mean']


def test_isotonic_model_round_trips_with_the_trusted_types(tmp_path):
    X, y = _students(400)
    params = load_params(overrides={**QUICK, 'model.quick.calibration': {'methods': ['none', 'isotonic'], 'cv': 3, 'ensemble': False}})
    # (a SMOTE step fitted on 3 columns would keep a KDTree, a type the project's pipelines, with dozens of columns, never store)
    m = modeling.calibrated(Pipeline([('sampler', 'passthrough'), ('clf', LogisticRegression(class_weight='balanced'))]), 'isotonic', params).fit(X, y)
    back = modeling.load_model(modeling.save_model(m, tmp_path/'m.skops'))
    np.testing.assert_array_equal(back.predict_proba(X), m.predict_proba(X))


def test_a_tie_goes_to_the_simpler_method():
    t = pd.DataFrame({'method': ['none', 'sigmoid', 'base rate'], 'kind': ['calibration', 'calibration', 'reference'],
                      'cv_brier_mean': [.12, .12, .10]})
    assert modeling.choose_calibration(t) == 'none'
    assert modeling.choose_calibration(t.assign(cv_brier_mean=[.12, .1199, .1])) == 'sigmoid'


@pytest.fixture(scope='module')
def smote_run(tmp_path_factory):
    "The model and evaluate stages on the demo data with a SMOTE logistic regression (distorted P(pass)), quick."
    from studentperf.data import run_prepare
    from studentperf.evaluation import run_evaluate
    p = load_params(overrides={**QUICK, 'model.candidates': ['logreg'], 'model.ensembles': [], 'model.imbalance': ['smote'],
                               'model.quick.grids': {'logreg': {'C': [1]}}})
    out = tmp_path_factory.mktemp('smote_run')
    run_prepare(p, out)
    split_rows = {}
    fitted = []
    orig = Pipeline.fit
    def spy(self, X, y=None, **kw):                               # every pipeline fit, wherever it happens
        fitted.append(set(X.index)); return orig(self, X, y, **kw)
    mp = pytest.MonkeyPatch(); mp.setattr(Pipeline, 'fit', spy)
    try: tr = modeling.run_model(p, out, progress=False)
    finally: mp.undo()
    run_evaluate(p, out)
    split = pd.read_csv(out/'data'/'split.csv')
    return p, out, tr, fitted, set(split.loc[split.part == 'test', 'row'])


def test_model_stage_records_the_calibration_and_saves_a_loadable_model(smote_run):
    p, out, tr, fitted, test_rows = smote_run
    tm = json.loads((out/'metrics'/'train_metrics.json').read_text())
    cal = tm['calibration']
    assert cal['method'] == tr.calibration_method == 'sigmoid'
    assert set(cal['scores']) == {*load_params()['model']['quick']['calibration']['methods'], 'base rate'}
    assert cal['scores']['sigmoid']['cv_brier_mean'] < cal['scores']['none']['cv_brier_mean']
    assert {'cv_brier_mean', 'cv_log_loss_mean', 'cv_roc_auc_mean'} <= set(cal['scores']['none'])
    m = modeling.load_model(out/'models'/'model.skops')
    assert type(m).__name__ == 'CalibratedClassifierCV' and m.method == 'sigmoid'
    from studentperf.data import read_cleaned
    from studentperf.features import split_xy
    proba = m.predict_proba(split_xy(read_cleaned(out, p), p)[0])
    assert ((proba >= 0) & (proba <= 1)).all() and np.allclose(proba.sum(1), 1)
    assert fitted and all(not (rows & test_rows) for rows in fitted)   # nothing was fitted on a hold-out row


def test_evaluation_and_card_report_calibration(smote_run):
    p, out, tr, _, _ = smote_run
    from studentperf import handoff
    from studentperf.fastpath import fast_predictor
    em = json.loads((out/'metrics'/'eval_metrics.json').read_text())
    assert em['model_calibration'] == 'sigmoid'
    for k in CALIBRATION_METRICS: assert k in em and k in em['calibration']['ci']
    assert em['brier_base_rate'] > 0 and 0 <= em['ece'] <= 1
    card = handoff.build_card(p, out)
    assert card['calibration']['method'] == 'sigmoid'
    assert card['calibration']['holdout']['ece']['value'] == em['ece']
    md = handoff.card_markdown({**card, 'git_commit': 'x'})
    assert '## Calibration' in md and 'sigmoid' in md and 'calibration_slope' in md
    fp = fast_predictor(modeling.load_model(out/'models'/'model.skops'), card['input_schema'])
    assert fp.path == 'numpy logreg + sigmoid calibration'


def test_odds_ratios_of_the_calibrated_logistic_regression(smote_run):
    "The saved model is a CalibratedClassifierCV around the pipeline: the interpretation guide still gets exact odds ratios."
    p, out, tr, _, _ = smote_run
    from studentperf import handoff
    from studentperf.data import read_cleaned
    from studentperf.features import split_xy
    m = modeling.load_model(out/'models'/'model.skops')
    assert type(m).__name__ == 'CalibratedClassifierCV' and len(m.calibrated_classifiers_) == 1   # ensemble=False: one pipeline
    od = handoff.odds_ratios(m)
    pipe = m.calibrated_classifiers_[0].estimator
    assert od is not None and sorted(od['feature']) == sorted(handoff.feature_names(pipe))
    X = split_xy(read_cleaned(out, p), p)[0].head(50)
    logit = lambda P: np.log(P[:, 1] / P[:, 0])
    f = modeling.preprocessor_of(pipe).transform(X)                   # the features the coefficients apply to
    coef = od.set_index('feature').loc[handoff.feature_names(pipe), 'coefficient'].to_numpy()
    lo = logit(m.predict_proba(X))
    np.testing.assert_allclose(lo - lo[0], (f - f[0]) @ coef, atol=1e-6)   # the calibrated model's log-odds, exactly
    assert not np.allclose(coef, pipe[-1].coef_[0])                   # not the raw pipeline's (calibration rescales them)
