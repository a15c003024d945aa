"""The evaluation stage: metrics against scikit-learn, the threshold rule, per-group counts, verdicts, the outputs of a
run on a saved model, and the CLI on UCI Portuguese setup C."""
import json, struct, subprocess, sys, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from studentperf import evaluation as E
from studentperf import modeling
from studentperf.config import load_params
from studentperf.data import run_prepare, read_cleaned
from studentperf.features import build_preprocessor, split_xy

CLI = [str(Path(sys.executable).parent/'studentperf')]

# a hand-made example with ties in P(pass), 4 at-risk and 6 passing students
Y = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0, 1])
P = np.array([.1, .4, .6, .6, .7, .9, .4, .8, .55, 1.])


def sk_metrics(y, p, t):
    "The module's REPORT_METRICS computed with scikit-learn (at-risk = pos_label 0, risk = 1 - P(pass), flag risk >= t)."
    pred, r = np.where(1 - p >= t, 0, 1), 1 - p
    return {'accuracy': skm.accuracy_score(y, pred), 'balanced_accuracy': skm.balanced_accuracy_score(y, pred),
            'precision_at_risk': skm.precision_score(y, pred, pos_label=0, zero_division=0),
            'recall_at_risk': skm.recall_score(y, pred, pos_label=0), 'f1_at_risk': skm.f1_score(y, pred, pos_label=0, zero_division=0),
            'precision_pass': skm.precision_score(y, pred, zero_division=0), 'recall_pass': skm.recall_score(y, pred),
            'f1_pass': skm.f1_score(y, pred, zero_division=0), 'roc_auc': skm.roc_auc_score(y, p),
            'pr_auc_at_risk': skm.average_precision_score(y == 0, r), 'brier': skm.brier_score_loss(y, p),
            'log_loss': skm.log_loss(y, p, labels=[0, 1])}


@pytest.mark.parametrize('t', [0.5, 0.35, 0.45, 0.6, 0.9])
def test_metrics_match_sklearn_on_hand_made_example(t):
    got = E.classification_metrics(Y, P, t)
    exp = sk_metrics(Y, P, t)
    for k in E.REPORT_METRICS: assert got[k] == pytest.approx(exp[k], abs=1e-12), k
    tn, fp, fn, tp = skm.confusion_matrix(Y == 0, 1 - P >= t).ravel()
    assert (got['tp'], got['fn'], got['fp'], got['tn']) == (tp, fn, fp, tn)
    assert E.confusion_frame(Y, P, t).values.tolist() == skm.confusion_matrix(Y, E.predict_pass(P, t), labels=[0, 1]).tolist()


def test_metrics_at_half_by_hand():
    "Risks .9 .6 .4 .45 for the at-risk students: 2 found, 2 missed; one passing student (risk .6) flagged."
    m = E.classification_metrics(Y, P)
    assert (m['tp'], m['fn'], m['fp'], m['tn']) == (2, 2, 1, 5)
    assert (m['accuracy'], m['recall_at_risk'], m['precision_at_risk']) == (0.7, 0.5, pytest.approx(2 / 3))


@pytest.mark.parametrize('seed', range(5))
def test_metrics_match_sklearn_on_random_scores_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    p = np.clip(np.round(0.3 * y + rng.random(60) * 0.7, 1), 0, 1)   # rounded: many ties
    for t in (0.3, 0.5, 0.7):
        got, exp = E.classification_metrics(y, p, t), sk_metrics(y, p, t)
        for k in E.REPORT_METRICS: assert got[k] == pytest.approx(exp[k], abs=1e-10), (k, t)


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match='0 .at risk. or 1 .pass.'): E.classification_metrics([0, 2], [.1, .2])
    with pytest.raises(ValueError, match=r'probabilities in \[0, 1\]'): E.classification_metrics([0, 1], [.1, np.nan])
    with pytest.raises(ValueError, match='equal length'): E.classification_metrics([0, 1, 1], [.1, .2])


def test_threshold_rule_picks_documented_threshold():
    """At-risk risks .9 .8 .7 .4 .2, passing .75 .5 .3 .1 .05: recall first reaches 0.8 at .4 (4 found, 2 false alarms,
    precision 2/3); lower thresholds have lower precision. Recall 1 first at .2."""
    y = np.r_[[0] * 5, [1] * 5]
    p = 1 - np.r_[[.9, .8, .7, .4, .2], [.75, .5, .3, .1, .05]]
    curve = E.threshold_curve(y, p)
    ch = E.choose_threshold(curve, 'recall_at_risk', 0.8, 'precision_at_risk')
    assert ch['threshold'] == pytest.approx(.4) and ch['reached'] and ch['precision_at_risk'] == pytest.approx(2 / 3)
    assert E.choose_threshold(curve, min=1.0)['threshold'] == pytest.approx(.2)
    # the chosen threshold applied to the data gives the reported recall and precision
    m = E.classification_metrics(y, p, ch['threshold'])
    assert (m['recall_at_risk'], m['precision_at_risk']) == (pytest.approx(.8), pytest.approx(2 / 3))


def test_threshold_rule_ties_and_unreachable():
    "Precision ties (.5 at .9 and at .6) go to the higher recall (.6); an unreachable minimum falls back and warns."
    y, p = [0, 0, 1, 1, 1], 1 - np.array([.9, .6, .95, .7, .1])
    curve = E.threshold_curve(y, p)
    assert E.choose_threshold(curve, min=.5)['threshold'] == pytest.approx(.6)
    with pytest.warns(UserWarning, match='no threshold reaches precision_at_risk >= 0.9'):
        ch = E.choose_threshold(curve, 'precision_at_risk', .9, 'recall_at_risk')
    assert ch['threshold'] == pytest.approx(.6) and not ch['reached']
    with pytest.raises(ValueError, match='evaluate.threshold.maximize'): E.choose_threshold(curve, maximize='precison')


def test_threshold_curve_matches_metrics_at_each_threshold():
    curve = E.threshold_curve(Y, P)
    assert curve['flagged'].tolist() == sorted(curve['flagged']) and curve['flagged'].iloc[-1] == len(Y)
    for _, r in curve.iterrows():
        m = E.classification_metrics(Y, P, r.threshold)
        assert (r.tp, r.fn, r.fp, r.tn) == (m['tp'], m['fn'], m['fp'], m['tn'])


def test_per_group_confusions_add_up_to_overall():
    rng = np.random.default_rng(0)
    n = 200
    y, p = rng.integers(0, 2, n), rng.random(n)
    g = pd.DataFrame({'sex': rng.choice(['F', 'M'], n), 'school': rng.choice(['GP', 'MS'], n),
                      'address': pd.Series(rng.choice(['U', 'R'], n)).where(rng.random(n) > .1)})   # some missing
    for t in (.3, .5):
        tab = E.group_metrics(g, y, p, ['sex', 'school', 'address'], t)
        overall = E.classification_metrics(y, p, t)
        for col, part in tab.groupby('column'):
            assert part[['tp', 'fn', 'fp', 'tn', 'n', 'n_at_risk']].sum().to_dict() == \
                {k: overall[k] for k in ('tp', 'fn', 'fp', 'tn', 'n', 'n_at_risk')}, col
    assert 'missing' in tab.loc[tab.column == 'address', 'group'].tolist()
    gaps = E.group_gaps(tab).set_index(['column', 'metric'])
    sx = tab[tab.column == 'sex'].set_index('group')['accuracy']
    assert gaps.loc[('sex', 'accuracy'), 'gap'] == pytest.approx(abs(sx['F'] - sx['M']))
    with pytest.raises(KeyError, match='group column'): E.group_metrics(g, y, p, ['gender'])


@pytest.mark.parametrize('acc,op,verdict', [(0.7501, '>', 'MET'), (0.75, '>', 'NOT MET'), (0.7499, '>', 'NOT MET'),
                                            (0.75, '>=', 'MET'), (0.7499, '>=', 'NOT MET'), (float('nan'), '>', 'NOT MET')])
def test_verdicts_flip_around_target(params, acc, op, verdict):
    targets = {'accuracy': {**params['evaluate']['targets']['accuracy'], 'op': op}}
    assert targets['accuracy']['value'] == 0.75   # the project's requirement
    res = {'default': {'accuracy': acc, 'threshold': .5}}
    assert E.check_requirements(res, targets).verdict.item() == verdict


def test_verdicts_read_the_configured_threshold(params):
    "recall_at_risk is read at the operating threshold by default; the interval decides the certainty."
    t = params['evaluate']['targets']
    res = {'default': {'accuracy': .8, 'roc_auc': .85, 'recall_at_risk': .3, 'threshold': .5},
           'operating': {'accuracy': .7, 'roc_auc': .85, 'recall_at_risk': .9, 'threshold': .2}}
    cis = {'default': pd.DataFrame({'low': [.7], 'high': [.9]}, index=['accuracy']),
           'operating': pd.DataFrame({'low': [.8], 'high': [.95]}, index=['recall_at_risk'])}
    r = E.check_requirements(res, t, cis).set_index('metric')
    assert r.loc['recall_at_risk', ['verdict', 'threshold', 'certainty']].tolist() == ['MET', .2, 'clearly met']
    assert r.loc['accuracy', ['verdict', 'certainty']].tolist() == ['MET', 'uncertain']
    with pytest.raises(ValueError, match='evaluate.targets.accuracy.at'):
        E.check_requirements(res, {'accuracy': {'op': '>', 'value': .75, 'at': 'best'}})


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 120)
    p = np.clip(.35 * y + rng.random(120) * .65, 0, 1)
    a = E.bootstrap_ci(y, p, n=200, seed=7)
    pd.testing.assert_frame_equal(a, E.bootstrap_ci(y, p, n=200, seed=7))
    assert ((a.low <= a.estimate) & (a.estimate <= a.high)).all() and (a.n_valid == 200).all()
    assert not a.equals(E.bootstrap_ci(y, p, n=200, seed=8))


def test_read_split_names_file_and_line(tmp_path):
    (tmp_path/'data').mkdir()
    with pytest.raises(FileNotFoundError, match='run the model stage first'): E.read_split(tmp_path, 5)
    (tmp_path/'data'/'split.csv').write_text('row,part\n0,train\n1,test\n9,test\n')
    with pytest.raises(ValueError, match=r'split.csv: line 4: row 9 is not a row'): E.read_split(tmp_path, 5)


def png_size(path):
    "Width and height of a PNG from its header."
    with open(path, 'rb') as f: head = f.read(24)
    assert head[:8] == b'\x89PNG\r\n\x1a\n'
    return struct.unpack('>II', head[16:24])


def check_outputs(out: Path, n_test: int):
    "Every output of the stage exists and is consistent."
    m = json.loads((out/'metrics'/'eval_metrics.json').read_text())
    for k in ('accuracy', 'balanced_accuracy', 'roc_auc', 'pr_auc_at_risk', 'brier', 'log_loss', 'recall_at_risk', 'operating_threshold'):
        assert isinstance(m[k], float), k
    assert m['n_test'] == n_test and sum(m['confusion_matrix']['default'].values()) == n_test
    assert set(m['requirements']) == set(load_params()['evaluate']['targets'])
    assert all(r['verdict'] in ('MET', 'NOT MET') for r in m['requirements'].values())
    assert m['requirements_met'] == all(r['verdict'] == 'MET' for r in m['requirements'].values())
    assert m['requirements']['accuracy']['verdict'] == ('MET' if m['accuracy'] > 0.75 else 'NOT MET')
    assert m['ci']['default']['accuracy']['low'] <= m['accuracy'] <= m['ci']['default']['accuracy']['high']
    # the summary figure is a real multi-panel figure
    fig = out/'figures'/'model_evaluation_results.png'
    assert m['figure']['panels'] == 6 and png_size(fig) == (m['figure']['width_px'], m['figure']['height_px'])
    assert png_size(fig)[0] >= 1500 and png_size(fig)[1] >= 1000
    for name in E.PANELS: assert (out/'figures'/f'{name}.png').exists(), name
    assert list(pd.read_csv(out/'plots'/'roc.csv').columns) == ['fpr', 'tpr', 'threshold']
    assert {'recall', 'precision'} <= set(pd.read_csv(out/'plots'/'pr.csv').columns)
    conf = pd.read_csv(out/'plots'/'confusion.csv')
    assert list(conf.columns) == ['actual', 'predicted'] and len(conf) == n_test
    c = m['confusion_matrix']['default']
    assert ((conf.actual == 'at risk') & (conf.predicted == 'at risk')).sum() == c['tp']
    assert len(pd.read_csv(out/'data'/'test_predictions.csv')) == n_test
    if 'modeling_test_accuracy' in m: assert m['accuracy'] == pytest.approx(m['modeling_test_accuracy'], abs=1e-6)
    return m


@pytest.fixture
def demo_run(tmp_path):
    "A prepared demo folder with a split and a small saved pipeline (a logistic regression), as the model stage writes them."
    p = load_params(overrides={'run.quick': True})
    run_prepare(p, tmp_path)
    df = read_cleaned(tmp_path, p)
    train, test = modeling.holdout_split(df, p)
    pd.DataFrame({'row': np.r_[train.index, test.index], 'part': ['train'] * len(train) + ['test'] * len(test)}) \
        .sort_values('row').to_csv(tmp_path/'data'/'split.csv', index=False)
    model = Pipeline([('pre', build_preprocessor(p)), ('clf', LogisticRegression(max_iter=2000))]).fit(*split_xy(train, p))
    modeling.save_model(model, tmp_path/'models'/'model.skops')
    return p, tmp_path, model, test


def test_run_evaluate_on_a_saved_model(demo_run):
    p, out, model, test = demo_run
    ev = E.run_evaluate(p, out)
    X, y = split_xy(test, p)
    assert ev.p.tolist() == pytest.approx(model.predict_proba(X)[:, 1].tolist())
    m = check_outputs(out, len(test))
    assert m['accuracy'] == pytest.approx(skm.accuracy_score(y, model.predict(X)), abs=1e-6)
    assert m['roc_auc'] == pytest.approx(skm.roc_auc_score(y, model.predict_proba(X)[:, 1]), abs=1e-6)
    assert m['threshold_rule']['source'] == 'cv' and m['threshold_rule']['oof_n'] == len(read_cleaned(out, p)) - len(test)
    assert m['threshold_rule']['recall_at_risk'] >= p['evaluate']['threshold']['min']   # reached on the training folds
    assert m['model'] == 'LogisticRegression' and 'modeling_test_accuracy' not in m   # no train_metrics.json / comparison here
    assert not (out/'figures'/'model_comparison.png').exists()


def test_run_evaluate_refuses_a_split_from_other_data(demo_run):
    p, out, *_ = demo_run
    (out/'data'/'split.csv').write_text('row,part\n0,train\n100000,test\n')
    with pytest.raises(ValueError, match='not a row of the cleaned table'): E.run_evaluate(p, out)


@pytest.mark.xdist_group('uci_por_c')
def test_cli_por_setup_c_writes_all_outputs(por_c_run):
    "The issue's command, quick: prepare, features, model and evaluate on UCI Portuguese, setup C (conftest.por_c_run)."
    tmp_path, r = por_c_run
    assert r.returncode == 0, r.stderr[-3000:]
    split = pd.read_csv(tmp_path/'data'/'split.csv')
    m = check_outputs(tmp_path, int((split.part == 'test').sum()))
    assert (m['dataset'], m['setup'], m['n_test']) == ('por', 'C', 130)
    assert 'modeling_test_accuracy' in m and (tmp_path/'figures'/'model_comparison.png').exists()
    assert (tmp_path/'reports'/'04_evaluation.html').exists()
