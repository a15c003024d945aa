"""The paper benchmark (benchmarks/paper_comparison.py) is resumable: per-fold results written as each fold finishes, a
rerun skips the folds done and gives the summary of an uninterrupted run, results of another configuration are refused."""
import importlib.util, json
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from studentperf.config import load_params, project_root
from studentperf.data import load_dataset

spec = importlib.util.spec_from_file_location('paper_comparison', project_root()/'benchmarks'/'paper_comparison.py')
pc = importlib.util.module_from_spec(spec); spec.loader.exec_module(pc)

# one run x 3 outer folds, the logistic regression only, one grid point, one feature variant: seconds per fold
TINY = ['--setups', 'C', '--runs', '1', '--folds', '3', '--quick', '--n-jobs', '1', '--set', 'model.candidates=[logreg]',
        '--set', 'model.ensembles=[]', '--set', 'model.imbalance=[none]', '--set', 'model.quick.grids={logreg: {C: [1]}}',
        '--set', 'model.quick.feature_variants={default: {}}', '--set', 'model.quick.calibration={methods: [none]}', '--inner-folds', '2']


@pytest.fixture(scope='module')
def small_csv(tmp_path_factory):
    "240 demo students (a few seconds per outer fold)."
    p = load_params()
    df = load_dataset(p, 'demo').data
    path = tmp_path_factory.mktemp('data')/'small.csv'
    cols = list(p['schemas'][p['schema']]['columns'])
    df.sample(240, random_state=0)[cols].to_csv(path, sep=';', index=False)
    return str(path)


def counting(monkeypatch, fail_at=None):
    "Replace `one_fold` by a counting wrapper; the `fail_at`-th call raises, as a run stopped in the middle of a fold."
    calls, real = [], pc.one_fold
    def fold(*args, **kw):
        calls.append(1)
        if fail_at is not None and len(calls) == fail_at: raise KeyboardInterrupt('stopped')
        return real(*args, **kw)
    monkeypatch.setattr(pc, 'one_fold', fold)
    return calls


def test_an_interrupted_run_resumes_without_recomputing_done_folds(tmp_path, small_csv, monkeypatch):
    res = tmp_path/'res'
    calls = counting(monkeypatch, fail_at=2)
    with pytest.raises(KeyboardInterrupt): pc.main(['--datasets', small_csv, *TINY, '--results', str(res)])
    done = sorted((res/'small-C').glob('*.json'))
    assert [f.name for f in done] == ['r00-f00.json'] and len(calls) == 2   # the first fold was written before the stop
    mtime = done[0].stat().st_mtime_ns
    calls = counting(monkeypatch)
    resumed = pc.main(['--datasets', small_csv, *TINY, '--results', str(res)])
    assert len(calls) == 2                                                    # folds 1 and 2 only
    assert done[0].stat().st_mtime_ns == mtime
    assert sorted(f.name for f in (res/'small-C').glob('*.json')) == ['r00-f00.json', 'r00-f01.json', 'r00-f02.json']
    calls = counting(monkeypatch)
    again = pc.main(['--datasets', small_csv, *TINY, '--results', str(res)])
    assert len(calls) == 0                                                    # nothing left to do
    whole = pc.main(['--datasets', small_csv, *TINY, '--results', str(tmp_path/'whole')])
    assert len(calls) == 3
    pd.testing.assert_frame_equal(resumed, whole)
    pd.testing.assert_frame_equal(again, whole)
    assert set(whole['model']) == {'baseline', 'logreg', 'selected'} and (whole['accuracy'] > .5).all()


def test_max_folds_stops_early_and_the_report_says_partial(tmp_path, small_csv, monkeypatch, capsys):
    calls = counting(monkeypatch)
    out = tmp_path/'report.md'
    pc.main(['--datasets', small_csv, *TINY, '--results', str(tmp_path/'res'), '--max-folds', '1', '--out', str(out)])
    assert len(calls) == 1
    assert 'PARTIAL: 1 of 3 outer folds are done' in out.read_text()
    assert len(pd.read_csv(out.with_suffix('.csv')).groupby(['run', 'fold'])) == 1


def test_results_of_another_configuration_or_data_are_refused(tmp_path, small_csv, monkeypatch):
    calls = counting(monkeypatch)
    res = str(tmp_path/'res')
    pc.main(['--datasets', small_csv, *TINY, '--results', res, '--max-folds', '0'])
    cfg = json.loads((Path(res)/'config.json').read_text())
    assert cfg['config']['folds'] == 3 and cfg['config']['grids'] == {'logreg': {'C': [1]}} and cfg['data']['small']
    with pytest.raises(pc.ResultsMismatch, match=r'another configuration .*differing: folds'):
        pc.main(['--datasets', small_csv, *TINY, '--results', res, '--max-folds', '0', '--folds', '4'])
    with pytest.raises(pc.ResultsMismatch, match=r'differing: params_sha256'):
        pc.main(['--datasets', small_csv, *TINY, '--results', res, '--max-folds', '0', '--set', 'model.smote_k=3'])
    other = tmp_path/'small.csv'   # same name, other students
    df = pd.read_csv(small_csv, sep=';'); df.iloc[::-1].iloc[:200].to_csv(other, sep=';', index=False)
    with pytest.raises(pc.ResultsMismatch, match=r'the data of small differs'):
        pc.main(['--datasets', str(other), *TINY, '--results', res, '--max-folds', '0'])
    # a fold file of another configuration in the folder is refused, not mixed in
    pc.main(['--datasets', small_csv, *TINY, '--results', res, '--max-folds', '1'])
    f = Path(res)/'small-C'/'r00-f00.json'
    rec = json.loads(f.read_text()); rec['fingerprint'] = 'x' * 16; f.write_text(json.dumps(rec))
    with pytest.raises(pc.ResultsMismatch, match='refusing to mix'):
        pc.main(['--datasets', small_csv, *TINY, '--results', res, '--max-folds', '0'])
    assert len(calls) == 1


def test_full_sets_the_papers_protocol():
    ap_defaults = {k: v for k, v in pc.FULL.items()}
    assert ap_defaults == {'runs': 20, 'folds': 10, 'inner_folds': None, 'quick': False}   # inner folds: model.cv_folds
    assert pc.REDUCED['quick'] and pc.REDUCED['runs'] < 20


@pytest.fixture(scope='module')
def two_subjects(tmp_path_factory):
    "Two small 'subjects' sharing 90 students (the same rows in both files), as CSV files."
    p = load_params()
    if not p['schemas'][p['schema']].get('pool'): pytest.skip(f"schema {p['schema']!r} declares no pool block in params.yaml")
    df = load_dataset(p, 'demo').data[list(p['schemas'][p['schema']]['columns'])].reset_index(drop=True)
    d = tmp_path_factory.mktemp('subjects')
    df.iloc[:180].to_csv(d/'suba.csv', sep=';', index=False)
    df.iloc[90:270].to_csv(d/'subb.csv', sep=';', index=False)
    return str(d/'suba.csv'), str(d/'subb.csv')


def test_pool_scores_each_subject_with_folds_grouped_by_student(tmp_path, two_subjects, monkeypatch):
    """--pool: outer folds of the pooled table never split a student; each subject's test rows are scored apart; each
    subject's own cell is trained and scored on that subject's rows of the same folds (paired with `pool:<subject>`)."""
    seen, alone, pooled = [], [], []
    def fake(df, tr, te, params, subjects=None):
        if subjects is None:
            alone.append((df, tr, te))
            return {'scores': {'selected': {'accuracy': .5}}, 'selected': 'logreg', 'brier_base': .2, 'oof': {'row': [], 'y': [], 'p': []}}
        g = pc.pool_groups(df, params)
        seen.append(set(g.iloc[tr]) & set(g.iloc[te]))
        pooled.append((df, tr, te, np.asarray(subjects)))
        assert set(np.asarray(subjects)[te]) == {'suba', 'subb'}
        return {s: {'scores': {'selected': {'accuracy': .5}}, 'selected': 'logreg', 'brier_base': .2, 'oof': {'row': [], 'y': [], 'p': []}}
                for s in ('suba', 'subb')}
    monkeypatch.setattr(pc, 'one_fold', fake)
    res = tmp_path/'res'
    pc.main(['--datasets', ','.join(two_subjects), '--pool', *TINY, '--results', str(res)])
    assert len(seen) == 3 and all(not s for s in seen)
    assert {d.name for d in res.iterdir() if d.is_dir()} == {'suba-C', 'subb-C', 'pool:suba-C', 'pool:subb-C'}
    cfg = json.loads((res/'config.json').read_text())['config']
    assert cfg['pool'] is True and cfg['subject_folds'] == 'pooled'   # a fingerprint of its own
    assert len(alone) == 6                                           # suba's 3 folds, then subb's
    cols = list(alone[0][0].columns)
    for i, sub in enumerate(('suba', 'subb')):
        for k, (pool, ptr, pte, subj) in enumerate(pooled):
            df, tr, te = alone[3 * i + k]
            for own, rows in ((tr, ptr), (te, pte)):                 # the same students, on the same side
                want = pool.iloc[rows[subj[rows] == sub]][cols].reset_index(drop=True)
                pd.testing.assert_frame_equal(df.iloc[own][cols].reset_index(drop=True), want)
            assert len(tr) + len(te) == len(df)


def test_one_pooled_fold_trains_on_both_subjects_grouped(two_subjects):
    "The real fold function on a pooled table: grouped inner folds, one result per subject, scored on that subject's rows."
    p0 = load_params()
    tabs = {Path(f).stem: load_dataset(p0, f).data for f in two_subjects}
    pooled = pc.pool_tables(tabs, p0)
    overrides = pc.parse_set([TINY[i + 1] for i, x in enumerate(TINY) if x == '--set'])
    p = pc.pool_params(pc.bench_params('C', 0, True, 2, None, [], overrides), list(tabs))
    splits = pc.pooled_splits(pooled, p, 3, 0)
    subj = pooled[pc.pool_settings(p)['subject_column']].to_numpy()
    out = pc.one_fold(pooled, *splits[0], p, subj)
    assert set(out) == {'suba', 'subb'}
    te = splits[0][1]
    for s, r in out.items():
        assert sorted(r['oof']['row']) == sorted(int(i) for i in te[subj[te] == s])
        assert r['scores']['selected']['roc_auc'] > .5 and 0 < r['scores']['selected']['brier'] < .25


def test_picks_are_read_back_per_cell_including_pooled_cells(tmp_path):
    "A re-rendered report takes the picks of each cell from the run's report: `pool:mat` must not overwrite `mat`."
    md = '\n'.join(f"## {pc.cell_title(c)}\n\n| table |\n\nModels picked by the selection rule (outer folds): C: {m} 3, logreg 1\n"
                   for c, m in (('mat', 'forest'), ('por', 'hgb'), ('pool:mat', 'svm'), ('pool:por', 'knn')))
    (tmp_path/'r.md').write_text(md)
    got = pc.picks_from_md(tmp_path/'r.md')
    assert got == {('mat', 'C'): {'forest': 3, 'logreg': 1}, ('por', 'C'): {'hgb': 3, 'logreg': 1},
                   ('pool:mat', 'C'): {'svm': 3, 'logreg': 1}, ('pool:por', 'C'): {'knn': 3, 'logreg': 1}}


def test_the_report_gives_the_early_warning_figures_of_each_complete_run(tmp_path, small_csv):
    """Recall of at-risk students, flagged share and precision of `selected` over all of a run's test students: at each
    fold's operating threshold (chosen on that fold's training rows) and at the default threshold."""
    out = tmp_path/'report.md'
    pc.main(['--datasets', small_csv, *TINY, '--results', str(tmp_path/'res'), '--out', str(out)])
    recs = [json.loads(f.read_text()) for f in sorted((tmp_path/'res'/'small-C').glob('*.json'))]
    y = np.concatenate([r['oof']['y'] for r in recs]); p = np.concatenate([r['oof']['p'] for r in recs])
    assert len(y) == 240                                                     # every student once
    assert 'subject_folds' not in json.loads((tmp_path/'res'/'config.json').read_text())['config']   # unpooled folders: unchanged fingerprint
    assert {'features', 'logreg', 'baseline', 'calibration', 'threshold'} <= set(recs[0]['step_seconds'])   # where the time went
    ts = [r['operating']['threshold'] for r in recs]
    assert len(set(ts)) > 1 and all(0 < t < 1 for t in ts)                   # chosen per fold, on its own training rows
    at_risk = y == 0
    op = np.concatenate([(1 - np.asarray(r['oof']['p'])) >= r['operating']['threshold'] for r in recs])
    rows = [[c.strip() for c in l.strip('|').split('|')] for l in out.read_text().splitlines()
            if l.startswith('| small C |') and ('operating' in l or 'default' in l)]
    assert [r[2].split(':')[0] for r in rows] == ['operating', 'default']
    for cells, flagged in zip(rows, (op, (1 - p) >= 0.5)):
        assert cells[1] == f"{at_risk.mean():.1%}" and cells[6] == '1'
        assert cells[3:6] == [f"{flagged.mean():.1%}", f"{(flagged & at_risk).sum() / at_risk.sum():.3f}",
                              f"{(flagged & at_risk).sum() / flagged.sum():.3f}"]
    assert rows[0][2].startswith(f"operating: {np.mean(ts):.3f}")
    near = sum(int((np.abs(1 - np.asarray(r['oof']['p']) - r['operating']['threshold']) <= 1e-6).sum()) for r in recs)
    assert f"{near} test prediction(s) (one per student and run) have a kept risk within 1e-06" in out.read_text()
    # a student whose kept risk sits on the threshold is counted (its flag may differ from the fold's own)
    f = sorted((tmp_path/'res'/'small-C').glob('*.json'))[0]
    rec = json.loads(f.read_text()); rec['operating']['threshold'] = 1 - rec['oof']['p'][0]; f.write_text(json.dumps(rec))
    pc.main(['--datasets', small_csv, *TINY, '--results', str(tmp_path/'res'), '--out', str(out)])
    assert f"{near + 1} test prediction(s) (one per student and run) have a kept risk within 1e-06 of their fold's operating threshold: their recomputed flag may differ" in out.read_text()
    # a fold chosen by another threshold rule is not mixed in: the run then shows the default row only
    f = sorted((tmp_path/'res'/'small-C').glob('*.json'))[0]
    rec = json.loads(f.read_text()); rec['operating']['rule']['min'] = 0.9; f.write_text(json.dumps(rec))
    pc.main(['--datasets', small_csv, *TINY, '--results', str(tmp_path/'res'), '--out', str(out)])
    assert [l for l in out.read_text().splitlines() if l.startswith('| small C |') and 'operating' in l] == []
    assert any(l.startswith('| small C |') and 'default' in l for l in out.read_text().splitlines())


@pytest.mark.parametrize('inner,method', [(3, 'none'), (3, 'sigmoid'), (3, 'isotonic'), (2, 'sigmoid')])
def test_the_operating_threshold_is_chosen_on_the_training_rows(small_csv, monkeypatch, inner, method):
    """`one_fold` chooses `selected`'s threshold on out-of-fold P(pass) of its training rows only. When the calibration
    comparison's folds are the threshold's (`model.cv_folds` = `evaluate.threshold.cv_folds_quick` = 3), its refits are
    reused (no new fit, exactly the P(pass) of refitting), whichever calibration method is chosen; with other folds (2
    inner folds) the threshold refits its own."""
    import studentperf.evaluation as ev, studentperf.modeling as modeling
    p0 = load_params()
    df = load_dataset(p0, small_csv).data
    sets = pc.parse_set([TINY[i + 1] for i, x in enumerate(TINY) if x == '--set'] + ['model.quick.calibration={methods: [none, sigmoid, isotonic], cv: 2}'])
    p = pc.bench_params('C', 0, True, inner, None, [], sets)
    assert p['evaluate']['threshold']['cv_folds_quick'] == 3
    y = pc.split_xy(df, p)[1]
    tr, te = next(pc.StratifiedKFold(3, shuffle=True, random_state=0).split(df, y))
    seen, refits, real_oof, real_cvp = [], [], pc.threshold_oof, ev.cross_val_predict
    def spy(model, X, yy, params, reuse=None):
        n = len(refits); out = real_oof(model, X, yy, params, reuse); n = len(refits) - n
        seen.append((X.index, out[1], real_oof(model, X, yy, params)[1], n, reuse is not None, getattr(model, 'method', 'none'))); return out
    monkeypatch.setattr(pc, 'threshold_oof', spy)
    monkeypatch.setattr(ev, 'cross_val_predict', lambda *a, **k: refits.append(1) or real_cvp(*a, **k))
    monkeypatch.setattr(modeling, 'choose_calibration', lambda t: method)   # each method's path, whichever would win here
    out = pc.one_fold(df, tr, te, p)
    (idx, got, fresh, n_refits, offered, used), = seen
    assert used == method                                            # the saved model is calibrated so
    assert idx.equals(df.index[tr])                                  # the training rows, never the test rows
    assert sorted(out['oof']['row']) == sorted(int(i) for i in te)
    assert offered and n_refits == (0 if inner == 3 else 1)          # same folds: reused; other folds: refitted
    np.testing.assert_array_equal(got, fresh)                        # either way exactly what refitting the folds gives


def test_the_pooling_effect_is_a_paired_difference_with_the_corrected_interval():
    "Pooled minus alone per fold, mean ± t(0.975, J - 1) x the Nadeau-Bengio corrected standard error (10 folds: 1/J + 1/9)."
    alone, pool = [.70, .70, .70, .70], [.72, .70, .74, .70]
    rows = pd.DataFrame([{'dataset': c, 'setup': 'C', 'run': 0, 'fold': k, 'model': 'selected', 'roc_auc': v, 'brier': .2, 'accuracy': .7}
                         for c, vals in (('mat', alone), ('pool:mat', pool)) for k, v in enumerate(vals)])
    d = np.array(pool) - np.array(alone)
    h = 3.182446 * np.sqrt((1 / 4 + 1 / 9) * d.var(ddof=1))   # t(0.975, 3)
    md = pc.pooling_effect(rows, ['mat'], 10)
    line, = [x for x in md.splitlines() if x.startswith('| mat C')]
    assert f"| 0.700 / 0.715 | +0.015 [{0.015 - h:+.3f}, {0.015 + h:+.3f}] |" in line
    assert "| 0.200 / 0.200 | +0.000 [+0.000, +0.000] |" in line and line.endswith("ROC-AUC: 2 of 4 |")
