"The features stage: setups, encodings, unknown categories, leakage, the manifest and the CLI."
import json, subprocess, sys, warnings
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from studentperf.config import load_params
from studentperf.data import run_prepare, read_cleaned, load_dataset
from studentperf import features as F

CLI = [str(Path(sys.executable).parent/'studentperf')]
GRADES = ('G1', 'G2', 'G3')


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    p = load_params(overrides={'run.quick': True})
    out = tmp_path_factory.mktemp('demo')
    run_prepare(p, out)
    return read_cleaned(out, p)


@pytest.fixture(scope='module')
def por():
    from conftest import UCI_DIR
    if not (UCI_DIR/'student-por.csv').exists(): pytest.skip(f'UCI data directory {UCI_DIR} is absent')
    p = load_params(overrides={'run.quick': True})
    return load_dataset(p, 'por', UCI_DIR).data


def _train(df, params, setup, **choices):
    X, y = F.split_xy(df, params, setup)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, stratify=y, random_state=params['run']['seed'])
    return F.build_preprocessor(params, setup, **choices).fit(X_tr, y_tr), X_tr, X_te


def test_por_setup_c_output_matches_manifest(por, params, tmp_path):
    p = load_params(overrides={'run.dataset': 'por', 'run.setup': 'C'})
    (tmp_path/'data').mkdir()
    por.to_csv(tmp_path/'data'/'student_performance_cleaned.csv', index=False)
    man = F.run_features(p, tmp_path)
    saved = json.loads((tmp_path/'data'/'feature_manifest.json').read_text())
    assert saved == json.loads(json.dumps(man))
    X, y = F.split_xy(por, p, 'C')
    X_tr, X_te, y_tr, _ = train_test_split(X, y, test_size=0.2, stratify=y, random_state=p['run']['seed'])
    pre = F.build_preprocessor(p, 'C').set_output(transform='pandas').fit(X_tr, y_tr)   # set_output before fit
    out = pre.transform(X_te)
    listed = [f['name'] for f in saved['features']]
    assert list(out.columns) == listed and saved['n_features'] == len(listed) == out.shape[1]
    assert saved['fitted_on'] == {'part': 'train', 'rows': 519, 'rows_total': 649, 'test_size': 0.2, 'stratify': 'pass', 'random_state': 42}
    assert {f['kind'] for f in saved['features']} == {'binary', 'nominal', 'ordinal', 'numeric', 'engineered'}
    assert all(set(f) == {'name', 'source', 'kind', 'transform'} and f['transform'] for f in saved['features'])


@pytest.mark.parametrize('setup,grades', [('A', {'G1', 'G2'}), ('B', {'G1'}), ('C', set())])
def test_prior_grades_by_setup(demo, params, setup, grades):
    assert set(F.setup_columns(params, setup)) & set(GRADES) == grades
    pre, *_ = _train(demo, params, setup)
    names = set(pre.get_feature_names_out())
    assert names & set(GRADES) == grades
    assert not any(n.startswith(('G3', 'pass', 'grade_band')) for n in names)


def test_binary_outputs_are_exactly_zero_one(demo, params):
    pre, X_tr, X_te = _train(demo, params, 'A')
    assert X_tr.isna().any().any()   # the demo data has gaps: imputation is exercised
    sl = pre.named_steps['encode'].output_indices_['binary']
    for X in (X_tr, X_te):
        b = pre.transform(X)[:, sl]
        assert b.shape[1] == 13 and set(np.unique(b)) == {0.0, 1.0}


@pytest.mark.parametrize('scaler', ['standard', 'minmax'])
def test_scaled_columns_on_fit_data(demo, params, scaler):
    pre, X_tr, _ = _train(demo, params, 'A', scaler=scaler)
    t = pd.DataFrame(pre.transform(X_tr), columns=pre.get_feature_names_out())[F.scaled_features(pre)]
    assert t.shape[1] == 10 + 3 + 2 + 5   # ordinals, numbers, G1/G2, scaled engineered features
    if scaler == 'standard':
        assert np.allclose(t.mean(), 0, atol=1e-9) and np.allclose(t.std(ddof=0), 1, atol=1e-9)
    else:
        assert np.allclose(t.min(), 0) and np.allclose(t.max(), 1)


def test_por_scaled_and_binary(por, params):
    pre, X_tr, _ = _train(por, params, 'C')
    out = pre.transform(X_tr)
    t = pd.DataFrame(out, columns=pre.get_feature_names_out())
    sc = F.scaled_features(pre)
    assert np.allclose(t[sc].mean(), 0, atol=1e-9) and np.allclose(t[sc].std(ddof=0), 1, atol=1e-9)
    assert set(np.unique(out[:, pre.named_steps['encode'].output_indices_['binary']])) == {0.0, 1.0}


def test_unseen_category_is_ignored_and_counted(demo, params):
    pre, _, X_te = _train(demo, params, 'C')
    X = X_te.head(4).copy()
    X.loc[X.index[:3], 'Fjob'] = 'astronaut'
    X.loc[X.index[0], 'guardian'] = 'grandmother'
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        out = pd.DataFrame(pre.transform(X), columns=pre.get_feature_names_out())
    assert any(issubclass(x.category, F.UnknownCategoryWarning) and "'Fjob': 3" in str(x.message) for x in w)
    assert F.count_unknown(pre, X) == {'Fjob': 3, 'guardian': 1}
    assert (out.filter(like='Fjob_').iloc[:3].to_numpy() == 0).all()
    model = Pipeline([('pre', F.build_preprocessor(params, 'C')), ('clf', LogisticRegression(max_iter=500))])
    model.fit(*F.split_xy(demo, params, 'C'))
    assert F.count_unknown(model, X) == {'Fjob': 3, 'guardian': 1}   # found inside a model pipeline too
    with pytest.warns(F.UnknownCategoryWarning): assert np.isfinite(model.predict_proba(X)).all()


def test_missing_required_column_is_named(demo, params):
    pre, _, X_te = _train(demo, params, 'B')
    with pytest.raises(F.FeatureError, match=r'missing required column\(s\) Medu, G1 for setup B'):
        pre.transform(X_te.drop(columns=['Medu', 'G1']))
    with pytest.raises(F.FeatureError, match=r'missing required column\(s\) studytime'):
        F.build_preprocessor(params, 'C').fit(F.split_xy(demo, params, 'C')[0].drop(columns=['studytime']))


def test_column_order_does_not_matter(demo, params):
    X, y = F.split_xy(demo, params, 'A')
    a = F.build_preprocessor(params, 'A').fit(X).transform(X)
    shuffled = X.sample(frac=1, axis=1, random_state=1).assign(extra=1, pass_=0)
    b = F.build_preprocessor(params, 'A').fit(shuffled).transform(X[X.columns[::-1]])
    assert list(shuffled.columns) != list(X.columns) and np.array_equal(a, b)


def test_no_leakage_from_held_out_rows(demo, params):
    "Fit on train, transform a shifted test part: the statistics stay those of the training rows."
    pre, X_tr, X_te = _train(demo, params, 'B')
    shifted = X_te.assign(age=X_te['age'] + 4, G1=X_te['G1'] - 5, Medu=4)
    ct = pre.named_steps['encode']
    tr_imputed = lambda c: X_tr[c].astype(float).fillna(X_tr[c].astype(float).median())
    exp = [tr_imputed(c).mean() for c in ('age', 'failures')]
    assert np.allclose(ct.named_transformers_['numeric'].named_steps['scale'].mean_, exp)
    assert np.allclose(ct.named_transformers_['grade'].named_steps['scale'].mean_, [tr_imputed('G1').mean()])
    before = pre.transform(X_tr)
    t = pd.DataFrame(pre.transform(shifted), columns=pre.get_feature_names_out())
    assert np.array_equal(pre.transform(X_tr), before)                 # transforming test rows changed nothing
    assert t['age'].mean() > 2 and t['G1'].mean() < -1                 # not re-centred on the test rows
    # the same pipeline fitted on train + shifted rows would have other statistics: the check above can fail
    both = F.build_preprocessor(params, 'B').fit(pd.concat([X_tr, shifted]))
    assert not np.allclose(both.named_steps['encode'].named_transformers_['numeric'].named_steps['scale'].mean_, exp)


def test_choices_and_engineered_switches(demo, params):
    X, _ = F.split_xy(demo, params, 'C')
    n = lambda **c: F.build_preprocessor(params, 'C', **c).fit(X).transform(X).shape[1]
    assert n() == 49 and n(engineered=[]) == 43 and n(ordinal='onehot') == 87 and n(onehot_drop='first') == 45
    for e in F.engineered_specs(params):
        pre = F.build_preprocessor(params, 'C', engineered=[e]).fit(X)
        assert list(pre.get_feature_names_out()).count(e) == 1 and len(pre.get_feature_names_out()) == 44
    no_skew = F.build_preprocessor(params, 'C', skew='none').fit(X)
    assert 'log1p' not in F.feature_table(no_skew).set_index('name').loc['absences', 'transform']
    with pytest.raises(F.FeatureError, match='unknown feature choice'): F.build_preprocessor(params, 'C', scalar='minmax')
    with pytest.raises(F.FeatureError, match='unknown engineered feature'): F.build_preprocessor(params, 'C', engineered=['iq'])
    ov = load_params(overrides={'features.scaler': 'minmax', 'features.engineered': []})
    assert F.feature_choices(ov)['scaler'] == 'minmax' and F.build_preprocessor(ov, 'C').fit(X).transform(X).shape[1] == 43


def test_skops_round_trip(demo, params, tmp_path):
    "A model pipeline with the preprocessor saves and loads with skops; these are the custom types to trust."
    X, y = F.split_xy(demo, params, 'C')
    m = Pipeline([('pre', F.build_preprocessor(params, 'C')), ('clf', LogisticRegression(max_iter=500))]).fit(X, y)
    sio.dump(m, tmp_path/'m.skops')
    untrusted = set(sio.get_untrusted_types(file=tmp_path/'m.skops'))
    assert untrusted <= {'numpy.dtype', 'studentperf.features.SchemaCheck', 'studentperf.features.EngineeredFeatures',
                         'studentperf.features.Log1p', 'studentperf.features.onehot_name'}
    m2 = sio.load(tmp_path/'m.skops', trusted=sorted(untrusted))
    assert np.allclose(m2.predict_proba(X), m.predict_proba(X))


@pytest.mark.xdist_group('uci_por_c')
def test_cli_writes_manifest_for_por(por_c_run):
    "The features stage of the CLI on UCI Portuguese, setup C, quick: read from the one run of conftest.por_c_run."
    tmp_path, r = por_c_run
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path/'data'/'feature_manifest.json').read_text())
    assert (m['dataset'], m['setup'], m['n_features']) == ('por', 'C', 49) and len(m['features']) == 49
    assert not any(f['source'] in GRADES for f in m['features'])
    assert (tmp_path/'reports'/'02_features.html').exists()
