#!/usr/bin/env python
"""Our models beside Cortez & Silva (2008), Table 3 (binary classification), under the paper's protocol.

The paper: 20 runs of 10-fold cross-validation on all students of a subject, accuracy (PCC, %) averaged over runs.
Here, inside every outer training fold, the modeling stage's whole protocol runs on that fold only (feature variants,
grid search of each candidate with an inner stratified k-fold, the two ensembles, the selection rule, the calibration),
and every model is then scored on the outer test fold it never saw: nested cross-validation, so no number is tuned on
its test rows. We also report ROC-AUC, balanced accuracy, F1 of the at-risk class and the Brier score.

    python benchmarks/paper_comparison.py --full --out benchmarks/results/paper_comparison_full.md   # the paper's protocol (days on 2 cores)
    python benchmarks/paper_comparison.py --out benchmarks/results/paper_comparison.md             # reduced: 2 x 10 folds, quick grids
    python benchmarks/paper_comparison.py --pool --setups C                  # both subjects in training vs each alone, paired folds
    python benchmarks/paper_comparison.py --scheduler tcp://host:8786        # outer folds on a Dask cluster (see nbs/12_scale)

**Resumable.** Each outer fold's scores are written, atomically, as soon as that fold finishes: one small JSON file per
(cell, run, fold) under `--results` (default `benchmarks/results/folds/<fingerprint>/`). A rerun with the same
configuration skips the folds already there, so the full protocol can be completed over several runs (`--max-folds N`
stops after N new folds). The configuration's fingerprint (a hash of the parameters that shape a fold's result --
params.yaml's target, schema, features and model sections, the grids, the outer folds, inner folds, seed, quick,
ensembles, pooling) and each subject's data hash are recorded in `config.json`; a results folder made with another
configuration or other data is refused, never mixed. The number of runs is not part of it: run r always uses seed
`seed + r`, so `--runs 20` extends a 2-run folder. The report is built from the per-fold files.

This is a script, not a test: it needs the UCI files (`--data-dir`, `$STUDENTPERF_DATA_DIR` or params.yaml).
"""
from __future__ import annotations
import argparse, copy, hashlib, json, logging, os, platform, subprocess, sys, time, warnings
from datetime import datetime, timezone
from pathlib import Path
import numpy as np
import pandas as pd
from joblib import Parallel, delayed, parallel_config
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from tqdm.auto import tqdm
import sklearn, imblearn
from studentperf import scale
from studentperf.config import load_params, active_target, parse_set, read_json, set_dotted, write_json, write_text
from studentperf.data import dataset_name, load_dataset
from studentperf.evaluation import (choose_threshold, classification_metrics, confusion_counts, counts_metrics, ece, risk_score,
                                    threshold_curve, threshold_oof)
from studentperf.features import split_xy
from studentperf.modeling import (SEARCH_METRICS, model_settings, pool_groups, pool_params, pool_settings, pool_tables, pooled_splits,
                                  score_all, train_models)

log = logging.getLogger('paper_comparison')

# Table 3 of Cortez & Silva (2008): binary PCC (%), mean of 20 runs of 10-fold CV. NV = naive predictor.
PAPER = {
    'mat': {'A': {'NV': 91.9, 'NN': 88.3, 'SVM': 86.3, 'DT': 90.7, 'RF': 91.2},
            'B': {'NV': 83.8, 'NN': 81.3, 'SVM': 80.5, 'DT': 83.1, 'RF': 83.0},
            'C': {'NV': 67.1, 'NN': 66.3, 'SVM': 70.6, 'DT': 65.3, 'RF': 70.5}},
    'por': {'A': {'NV': 89.7, 'NN': 90.7, 'SVM': 91.4, 'DT': 93.0, 'RF': 92.6},
            'B': {'NV': 87.5, 'NN': 87.6, 'SVM': 88.0, 'DT': 88.4, 'RF': 90.1},
            'C': {'NV': 84.6, 'NN': 83.4, 'SVM': 84.8, 'DT': 84.4, 'RF': 85.0}},
}
SUBJECT = {'mat': 'Mathematics', 'por': 'Portuguese'}
METRICS = (*SEARCH_METRICS, 'brier')   # per model and fold; `brier_base` (the training fold's pass rate) per fold
REDUCED = {'runs': 2, 'folds': 10, 'inner_folds': 3, 'quick': True}   # the default: hours, not days, on 2 cores
FULL = {'runs': 20, 'folds': 10, 'inner_folds': None, 'quick': False}  # --full: inner folds = model.cv_folds, full grids


_BASE = {}

def bench_params(setup: str, seed: int, quick: bool, inner_folds: int, params_file=None, ensembles=None, overrides=None) -> dict:
    "Parameters of one setup: params.yaml as read at start, inner folds set, one job per fit (outer folds run in parallel)."
    key = (params_file, json.dumps(overrides or {}, sort_keys=True, default=str))
    if key not in _BASE: _BASE[key] = load_params(params_file, overrides)
    p = copy.deepcopy(_BASE[key])
    for k, v in {'run.setup': setup, 'run.seed': seed, 'run.quick': quick, 'model.n_jobs': 1}.items(): set_dotted(p, k, v)
    for sec in (p['model'], p['model'].get('quick') or {}):
        if 'cv_folds' in sec or sec is p['model']: sec['cv_folds'] = inner_folds
        if ensembles is not None and ('ensembles' in sec or sec is p['model']): sec['ensembles'] = list(ensembles)
    return p


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def config_record(a) -> dict:
    """What a fold's result depends on, besides its data: the parameter sections that shape training (a hash, and the
    effective grids in clear), the outer folds, inner folds, first seed, quick, ensembles and pooling. Not the number of
    runs (run r always shuffles with seed + r) nor where or how fast the folds run."""
    p = bench_params('C', a.seed, a.quick, a.inner_folds, a.params, a.ensembles, a.overrides)
    shaping = {k: p[k] for k in ('schema', 'schemas', 'features', 'model')}   # the target lives in its schema block
    shaping['data.missing'] = p['data']['missing']
    m = model_settings(p)
    return {'version': 1, 'folds': a.folds, 'inner_folds': a.inner_folds, 'seed': a.seed, 'quick': bool(a.quick),
            'ensembles': m['ensembles'], 'pool': bool(a.pool), 'params_sha256': _sha(shaping), 'grids': m['grids'],
            'selection': m['selection'], 'metric': m['metric'], 'calibration': m['calibration'],
            **({'subject_folds': 'pooled'} if a.pool else {})}   # with --pool every cell uses the pooled (grouped) folds


def data_sha(df: pd.DataFrame) -> str:
    "A hash of a cleaned table's content (rows, columns, values)."
    return _sha([list(df.columns), [str(t) for t in df.dtypes], pd.util.hash_pandas_object(df, index=True).tolist()])


class ResultsMismatch(SystemExit):
    "A results folder made with another configuration or other data: refused, never mixed."


def open_results(folder: Path, config: dict, shas: dict) -> Path:
    "Create or check `folder/config.json`: same fingerprint and same data hashes, or `ResultsMismatch` saying what differs."
    f = folder/'config.json'
    old = read_json(f)
    fp = _sha(config)[:16]
    if old is not None:
        if old['fingerprint'] != fp:
            diff = sorted(k for k in set(config) | set(old['config']) if config.get(k) != old['config'].get(k))
            raise ResultsMismatch(f"{folder}: holds per-fold results of another configuration (fingerprint {old['fingerprint']}, "
                                  f"this run {fp}; differing: {', '.join(diff)}). Use another --results folder, or remove "
                                  "that one to start again; results of two configurations are never mixed.")
        changed = [d for d, h in shas.items() if d in old['data'] and old['data'][d] != h]
        if changed:
            raise ResultsMismatch(f"{folder}: the data of {', '.join(changed)} differs from the data its per-fold results were "
                                  "computed on (content hash in config.json). Use another --results folder.")
        shas = {**old['data'], **shas}
    write_json(f, {'fingerprint': fp, 'config': config, 'data': shas,
                   'versions': {'python': platform.python_version(), 'scikit-learn': sklearn.__version__, 'imbalanced-learn': imblearn.__version__}})
    return folder


def fold_file(folder: Path, dataset: str, setup: str, run: int, fold: int) -> Path:
    return Path(folder)/f'{dataset}-{setup}'/f'r{run:02d}-f{fold:02d}.json'


def op_rule(params: dict) -> dict:
    "The operating-threshold rule of `evaluate.threshold` (recorded in each fold; folds chosen by another rule are not mixed)."
    r = params['evaluate']['threshold']
    return json.loads(json.dumps({k: r[k] for k in ('constraint', 'min', 'maximize', 'cv_folds', 'cv_folds_quick')}, default=str))


def one_fold(df: pd.DataFrame, train_idx, test_idx, params: dict, subjects=None) -> dict:
    """Train everything on the outer training fold, score every model on the outer test fold (`selected` is the saved,
    calibrated model), and choose `selected`'s operating threshold on the training fold as the evaluation stage does
    (`evaluate.threshold`: its rule on out-of-fold P(pass) of the training rows). With `subjects` (pooled data: each
    row's subject), the test rows of each subject are scored apart: `{subject: scores}`."""
    X, y = split_xy(df, params)
    # One fold is one task on one core: its searches run in this process. (Under Dask, joblib would otherwise send each
    # inner fit back to the busy cluster as a task of its own: measured 4x slower on 2 workers.)
    with warnings.catch_warnings(), parallel_config(backend='sequential'):
        warnings.simplefilter('ignore')
        groups = None if subjects is None else pool_groups(df, params)
        tr = train_models(X.iloc[train_idx], y.iloc[train_idx], params, progress=False,
                          **({} if groups is None else {'groups': groups.iloc[train_idx]}))
        rule, t0 = params['evaluate']['threshold'], time.time()
        op = choose_threshold(threshold_curve(*threshold_oof(tr.model, X.iloc[train_idx], y.iloc[train_idx], params, reuse=tr.oof)),
                              rule['constraint'], rule['min'], rule['maximize'])
        steps = {**tr.seconds, 'threshold': round(time.time() - t0, 2)}   # where the fold's time goes (train_models' steps)
        parts = {None: test_idx} if subjects is None else {s: test_idx[np.asarray(subjects)[test_idx] == s] for s in np.unique(subjects)}
        out = {}
        for s, idx in parts.items():
            Xt, yt = X.iloc[idx], y.iloc[idx]
            models = {**tr.models, 'selected': tr.model}
            scores = {n: score_all(m, Xt, yt) for n, m in models.items()}   # the four metrics and the Brier score
            prior = {'A': 'G2', 'B': 'G1'}.get(params['run']['setup'])
            if prior and prior in X:   # the paper's NV for setups A and B: the previous grade's pass/fail
                g = Xt[prior].astype('float64').fillna(X.iloc[train_idx][prior].astype('float64').median())
                pred = (g >= active_target(params)['pass_threshold']).astype(int).to_numpy()
                ya = yt.to_numpy()
                scores['naive_grade'] = {'accuracy': float(accuracy_score(ya, pred)), 'balanced_accuracy': float(balanced_accuracy_score(ya, pred)),
                                         'f1_at_risk': float(f1_score(ya, pred, pos_label=0, zero_division=0)),
                                         'roc_auc': float(roc_auc_score(ya, pred)) if len(set(ya)) > 1 else float('nan')}
            out[s] = {'scores': scores, 'selected': tr.selected, 'variant': tr.variant, 'calibration': tr.calibration_method, 'step_seconds': steps,
                      'brier_base': float(np.mean((yt.to_numpy() - y.iloc[train_idx].mean()) ** 2)),
                      'operating': {'threshold': op['threshold'], 'reached': op['reached'], 'rule': op_rule(params)},
                      # the saved model's P(pass) of each test student (row of the table): the run's ECE needs all of them
                      'oof': {'row': [int(i) for i in idx], 'y': [int(v) for v in yt], 'p': [round(float(v), 6) for v in models['selected'].predict_proba(Xt)[:, 1]]}}
    return out[None] if subjects is None else out


def _task(key, df, tr, te, p, subjects):
    t0 = time.time()
    res = one_fold(df, tr, te, p, subjects)
    return key, res, time.time() - t0


def subject_folds(splits: list, # `pooled_splits` of the pooled table: `[(train, test), ...]` positions
                  subjects: np.ndarray, # the subject of each row of the pooled table
                  subject: str, # the subject wanted
                 ) -> list:
    """The rows of `subject` in each pooled fold, as positions in that subject's own table (`pool_tables` keeps each
    subject's rows in their order): its own folds, whose test students are those of `pool:<subject>` fold by fold."""
    pos = np.flatnonzero(subjects == subject)
    if not len(pos): raise ValueError(f"subject_folds: no row of subject {subject!r} in the pooled table")
    return [(np.searchsorted(pos, tr[subjects[tr] == subject]), np.searchsorted(pos, te[subjects[te] == subject])) for tr, te in splits]


def plan(data: dict, a) -> list:
    """Every outer fold of the requested cells: `(dataset, cells, run, fold, train, test, params, subjects)`, where `cells` are
    the `(cell, setup)` the fold's result is recorded under (one per subject for a pooled fold, whose `subjects` names each
    row's subject; outer folds grouped by student). With `--pool` each subject's own cell uses its rows of the pooled
    folds (`subject_folds`), so `mat` and `pool:mat` are scored on the same test students, fold by fold."""
    tasks, pooled = [], {}
    for st in a.setups:                 # setup by setup (C first, if asked so), both subjects each
        for ds, df in data.items():
            for r in range(a.runs):
                seed = a.seed + r
                p = bench_params(st, seed, a.quick, a.inner_folds, a.params, a.ensembles, a.overrides)
                if a.pool and seed not in pooled:
                    table = data['pool']
                    pooled[seed] = (pooled_splits(table, p, a.folds, seed), table[pool_settings(p)['subject_column']].astype(str).to_numpy())
                if ds == 'pool':
                    p = pool_params(p, a.subjects)
                    splits, sub = pooled[seed]
                    cells = [(f'pool:{s}', st) for s in a.subjects]
                elif a.pool:                    # paired with `pool:<ds>`: the same test students, trained on this subject alone
                    splits, sub = subject_folds(*pooled[seed], ds), None
                    cells = [(ds, st)]
                else:
                    y, sub = split_xy(df, p)[1], None
                    splits = StratifiedKFold(a.folds, shuffle=True, random_state=seed).split(df, y)
                    cells = [(ds, st)]
                for k, (tr, te) in enumerate(splits): tasks.append((ds, cells, r, k, tr, te, p, sub))
    return tasks


def run_folds(data: dict, a, folder: Path, fp: str) -> int:
    "Compute the folds not yet in `folder` (at most `a.max_folds`), writing each as it finishes; returns how many were computed."
    tasks = plan(data, a)
    todo = [t for t in tasks if not all(fold_file(folder, c, s, t[2], t[3]).exists() for c, s in t[1])]
    n_done = len(tasks) - len(todo)
    if a.max_folds is not None: todo = todo[:a.max_folds]
    log.info('%d of %d outer folds already done in %s; computing %d', n_done, len(tasks), folder, len(todo))
    gen = Parallel(n_jobs=a.n_jobs, return_as='generator_unordered')(
        delayed(_task)(i, data[ds], tr, te, p, sub) for i, (ds, cells, r, k, tr, te, p, sub) in enumerate(todo))
    n = 0
    with tqdm(total=len(tasks), initial=n_done, desc='outer folds', unit='fold') as bar:
        for i, res, secs in gen:
            ds, cells, r, k, *_ = todo[i]
            for (cell, st), sub in zip(cells, a.subjects if ds == 'pool' else [None]):
                out = res[sub] if sub is not None else res
                write_json(fold_file(folder, cell, st, r, k), {'fingerprint': fp, 'dataset': cell, 'setup': st, 'run': r, 'fold': k,
                                                                'seconds': round(secs, 2), **out})
            n += 1; bar.update(1); bar.set_postfix_str(f'{cells[0][0]} {cells[0][1]} r{r} f{k}')
    return n


def run_setup(df: pd.DataFrame, dataset: str, setup: str, a) -> tuple[pd.DataFrame, dict]:
    """All runs x folds of one cell, in memory (nothing written, nothing resumed: `benchmarks/scale.py` times this);
    one row per (run, fold, model) and the selection counts."""
    a = argparse.Namespace(**{'overrides': None, 'pool': False, 'subjects': [], **vars(a), 'setups': [setup]})
    tasks = plan({dataset: df}, a)
    gen = Parallel(n_jobs=a.n_jobs, return_as='generator')(delayed(_task)(i, df, tr, te, p, None) for i, (_, _, _, _, tr, te, p, _) in enumerate(tasks))
    rows, chosen = [], {}
    for i, res, _ in tqdm(gen, total=len(tasks), desc=f'{dataset} {setup}', unit='fold'):
        _, _, r, k, *_ = tasks[i]
        chosen[res['selected']] = chosen.get(res['selected'], 0) + 1
        for n, sc in res['scores'].items(): rows.append({'dataset': dataset, 'setup': setup, 'run': r, 'fold': k, 'model': n, **sc})
    return pd.DataFrame(rows), chosen


DEFAULT_THRESHOLD = 0.5   # the early-warning figures of `selected`: flagged when its risk (1 - P(pass)) is at least this,
                          # and at each fold's operating threshold (`op_*`; runs whose folds all recorded one)
WARNING = ['recall_at_risk', 'precision_at_risk', 'flagged_share']
RUN_METRICS = ['ece', *WARNING, 'at_risk_share', 'op_threshold', 'op_reached', *(f'op_{k}' for k in WARNING)]
P_ROUND = 1e-6   # fold files keep P(pass) to 6 decimals: a risk this close to the fold's threshold could flip its flag


def early_warning(y, flagged) -> dict:
    "`WARNING` figures of one run's test students (precision 0 when nobody is flagged)."
    m = counts_metrics(confusion_counts(np.asarray(y), np.asarray(flagged, bool)))
    return {k: m[k] for k in WARNING}

def load_folds(folder: Path, a, fp: str) -> tuple[pd.DataFrame, dict, float, pd.DataFrame]:
    """The per-fold files of the requested cells and runs: one row per (run, fold, model), the selection counts, the compute
    time, and per (cell, run), over all its folds' test students (complete runs only), `RUN_METRICS` of `selected`: the
    expected calibration error and the early-warning figures at `DEFAULT_THRESHOLD` and, where every fold recorded one
    chosen by the current rule (`op_rule`), at each fold's own operating threshold (`op_*`)."""
    rows, chosen, secs, oof = [], {}, 0.0, {}
    rule = op_rule(bench_params('C', a.seed, a.quick, a.inner_folds, a.params, a.ensembles, getattr(a, 'overrides', None)))
    cells = [(c, st) for st in a.setups for ds in a.datasets for c in ([f'pool:{s}' for s in a.subjects] if ds == 'pool' else [ds])]
    for cell, st in cells:
        for f in sorted((Path(folder)/f'{cell}-{st}').glob('r*-f*.json')):
            rec = read_json(f)
            if rec['fingerprint'] != fp:
                raise ResultsMismatch(f"{f}: computed with configuration {rec['fingerprint']}, not this run's {fp}; refusing to mix them.")
            if rec['run'] >= a.runs or rec['fold'] >= a.folds: continue
            d = chosen.setdefault((cell, st), {}); d[rec['selected']] = d.get(rec['selected'], 0) + 1
            secs += rec['seconds']
            oof.setdefault((cell, st, rec['run']), []).append({**rec['oof'], 'operating': rec.get('operating')})
            for n, s in rec['scores'].items():
                rows.append({'dataset': cell, 'setup': st, 'run': rec['run'], 'fold': rec['fold'], 'model': n, **s, 'brier_base': rec['brier_base']})
    per_run = []
    for (c, st, r), parts in oof.items():
        if len(parts) != a.folds or not sum(len(o['y']) for o in parts): continue
        yy, pp = np.concatenate([o['y'] for o in parts]), np.concatenate([o['p'] for o in parts])
        m = classification_metrics(yy, pp, DEFAULT_THRESHOLD)
        row = {'dataset': c, 'setup': st, 'run': r, 'ece': ece(yy, pp, a.bins), **{k: m[k] for k in WARNING}, 'at_risk_share': m['n_at_risk'] / m['n']}
        if all(o['operating'] and o['operating'].get('rule') == rule for o in parts):   # each fold's students at its own threshold
            gap = [risk_score(np.asarray(o['p'])) - o['operating']['threshold'] for o in parts]   # each student's risk minus its fold's threshold
            flagged = np.concatenate([g >= 0 for g in gap])
            near = int(sum((np.abs(g) <= P_ROUND).sum() for g in gap))
            if near: log.warning('%s %s run %d: %d student(s) within %g of their fold\'s threshold: a flag may differ from the fold\'s own', c, st, r, near, P_ROUND)
            row.update({'op_near': near, 'op_threshold': float(np.mean([o['operating']['threshold'] for o in parts])),
                        'op_reached': float(np.mean([o['operating']['reached'] for o in parts])),
                        **{f'op_{k}': v for k, v in early_warning(yy, flagged).items()}})
        per_run.append(row)
    return pd.DataFrame(rows), chosen, secs, pd.DataFrame(per_run, columns=['dataset', 'setup', 'run', *RUN_METRICS, 'op_near'])


CI_MIN_RUNS = 5   # below this, a t-interval over runs is meaningless (t = 12.7 for two runs): show the fold spread


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, setup and model: the mean over runs of each run's mean over folds, and a spread: the half-width of a
    95% t-interval over runs (as the paper) with at least `CI_MIN_RUNS` runs, else the standard deviation over all outer folds."""
    cols = [c for c in (*METRICS, 'brier_base') if c in rows]
    per_run = rows.groupby(['dataset', 'setup', 'model', 'run'])[cols].mean().reset_index()
    g = per_run.groupby(['dataset', 'setup', 'model'])[cols]
    mean, sd, n = g.mean(), g.std(ddof=1), g.count()
    if rows['run'].nunique() >= CI_MIN_RUNS: spread = sd * stats.t.ppf(0.975, n - 1) / np.sqrt(n)
    else: spread = rows.groupby(['dataset', 'setup', 'model'])[cols].std(ddof=1)
    return mean.join(spread.add_suffix('_ci')).reset_index()


def picks_from_md(path: Path) -> dict:
    "The 'Models picked' lines of an earlier report: {(cell, setup): {model: count}}; a cell's heading names it in backticks."
    chosen, ds = {}, None
    for line in path.read_text().splitlines():
        if line.startswith('## ') and line.endswith('`)') and '(`' in line: ds = line.rsplit('(`', 1)[1][:-2]   # `cell_title`
        if line.startswith('Models picked') and ds:
            for part in line.split(': ', 1)[1].split('; '):
                st, items = part.split(': ', 1)
                chosen[(ds, st)] = {m: int(n) for m, n in (x.rsplit(' ', 1) for x in items.split(', '))}
    return chosen


def picks_from_rows(rows: pd.DataFrame) -> dict:
    "Which model `selected` was in each outer fold, recovered from the saved scores (the model with the same four scores)."
    chosen = {}
    for (ds, st, r, k), g in rows.groupby(['dataset', 'setup', 'run', 'fold']):
        s = g.set_index('model')[list(SEARCH_METRICS)]
        same = [m for m in MODEL_ORDER if m in s.index and m not in ('selected', 'naive_grade') and (s.loc[m] == s.loc['selected']).all()]
        d = chosen.setdefault((ds, st), {}); name = same[0] if same else '?'
        d[name] = d.get(name, 0) + 1
    return chosen


MODEL_ORDER = ['naive_grade', 'baseline', 'logreg', 'knn', 'tree', 'forest', 'svm', 'hgb', 'voting', 'stacking', 'selected']


def fmt(v, ci=None, pct=False, nd=1):
    if v is None or (isinstance(v, float) and np.isnan(v)): return ''
    s = f"{v * 100:.{nd}f}" if pct else f"{v:.3f}"
    if ci is not None and not np.isnan(ci) and ci > 0: s += f" ±{ci * 100:.{nd}f}" if pct else f" ±{ci:.3f}"
    return s


def cell(s, st, m, metric):
    "(mean, ci) of one table cell, (nan, nan) when that model was not run for that setup."
    return (s.loc[(st, m), metric], s.loc[(st, m), f'{metric}_ci']) if (st, m) in s.index else (np.nan, np.nan)


def subject_of(cell: str) -> str:
    "`mat`, `por`, `pool:mat` -> the subject key (`mat`, `por`)."
    return cell.split(':')[-1]


def cell_title(cell: str) -> str:
    name = SUBJECT.get(subject_of(cell), subject_of(cell))
    return f"{name}, trained on both subjects (`{cell}`)" if cell.startswith('pool:') else f"{name} (`{cell}`)"


def report(summ: pd.DataFrame, chosen: dict, a, seconds: float, argv: list, done: tuple|None=None, per_run=None,
           rows: pd.DataFrame|None=None) -> str:
    "The markdown report (`rows`: the per-fold scores, for the paired pooling comparison of a `--pool` run)."
    models = [m for m in MODEL_ORDER if m in set(summ['model'])]
    bp = bench_params('C', a.seed, a.quick, a.inner_folds, a.params, a.ensembles, getattr(a, 'overrides', None))
    ms = model_settings(bp)
    L = [f"# Our models beside Cortez & Silva (2008), Table 3 (binary pass/fail)\n",
         f"Generated by `benchmarks/paper_comparison.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.\n",
         "```", "python " + " ".join(argv), "```\n",
         *(["(This report was re-rendered with `--from-csv` from the per-fold scores that command wrote, "
            f"`{Path(a.out or 'paper_comparison.md').with_suffix('.csv').name}`.)\n"] if a.from_csv else []),
         *([f"**PARTIAL: {done[0]} of {done[1]} outer folds are done; rerun the same command to complete the others "
            "(the folds done are kept).**\n"] if done and done[0] < done[1] else []),
         f"- Machine: {os.cpu_count()} cores (`nproc` = {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()}), "
         f"shared with other work; Python {platform.python_version()}, scikit-learn {sklearn.__version__}, "
         f"imbalanced-learn {imblearn.__version__}; compute time (sum over outer folds, maybe over several runs) {seconds / 60:.1f} min.",
         (f"- Outer protocol: {a.runs} run(s) x {a.folds}-fold CV of both subjects' students pooled, stratified by pass and "
          f"grouped by student (run r shuffles with seed {a.seed}+r); every cell, pooled or not, is scored on its subject's "
          "rows of these folds. The paper: 20 runs x 10 folds of one subject." if a.pool else
          f"- Outer protocol: {a.runs} run(s) x {a.folds}-fold stratified CV on all students of each subject "
          f"(run r shuffles with seed {a.seed}+r). The paper: 20 runs x 10 folds."),
         f"- Inside every outer training fold: the modeling stage's whole protocol on that fold only -- feature variants "
         f"compared by CV, a grid search of each candidate with an inner {a.inner_folds}-fold stratified CV (none / SMOTE / "
         f"class weights inside the grid), the ensembles of the tuned candidates named below, the selection rule "
         f"(`{ms['selection']}` on CV `{ms['metric']}`) that picks **selected**, and its calibration (methods "
         f"{', '.join(ms['calibration']['methods'])}; `selected` is scored as saved, calibrated). "
         f"Grids: {'the `quick` grids' if a.quick else 'the full grids'} of `params.yaml` (`model:`). "
         f"Ensembles built in each fold: {', '.join(ms['ensembles']) or 'none'}. "
         "Every number is measured on outer test folds the tuning never saw.",
         (f"- ± is the half-width of a 95% t-interval over runs (as in the paper)." if a.runs >= CI_MIN_RUNS else
          f"- ± is the standard deviation over the {a.runs * a.folds} outer test folds (with fewer than {CI_MIN_RUNS} runs a "
          "t-interval over runs means nothing); the paper's ± were 95% intervals over 20 runs, so ours are wider by nature."),
         ]
    if any(str(d).startswith('pool:') for d in set(summ['dataset'])):
        L.append("- `pool:<subject>` cells: trained on the students of both subjects (a subject column added) and scored on "
                 "that subject's test students only; `<subject>` cells: trained on that subject's rows of the same folds, "
                 "so the two are paired fold by fold. No student is on both sides of any outer split (the overlap rule of "
                 "`schemas.<schema>.pool`, `modeling.student_groups`); in pooled training the searches', the calibration "
                 "step's and the stacking meta-model's folds are grouped too, not the SVM's internal Platt folds (inside "
                 "the pipeline, after preprocessing and SMOTE, the rows no longer carry their student) nor the operating "
                 "threshold's.")
    if a.full and a.runs < 20 and a.folds == 10 and not a.quick:
        L.append(f"- **The paper's full protocol, {a.runs} of its 20 runs**: full grids, inner {a.inner_folds}-fold CV. "
                 "`--runs 20` with the same command adds the other runs to the same per-fold results.")
    elif a.runs < 20 or a.folds != 10 or a.quick:
        L.append(f"- **Reduced protocol**: {a.runs} run(s) instead of 20{', small (`quick`) grids' if a.quick else ''}, "
                 f"inner {a.inner_folds}-fold CV, to fit the time available on {os.cpu_count()} shared cores. The means are "
                 "estimates with wider intervals than the paper's; rerun with `--full` for the paper's protocol.")
    L.append("\nOur names: `baseline` = most frequent class of the training fold (the paper's NV for setup C); "
             "`naive_grade` = pass when the latest prior grade (G2 in A, G1 in B) is at least 10 (the paper's NV for A and B); `logreg`, `knn`, `tree` (the "
             "paper's DT), `forest` (RF), `svm` (linear or RBF, calibrated), `hgb` (histogram gradient boosting); `voting`, "
             "`stacking` = ensembles of the six; `selected` = whatever the selection rule picked in that fold, calibrated. The paper's "
             "NN (a neural network) has no counterpart here.\n")
    order = [d for d in ('mat', 'por', 'pool:mat', 'pool:por') if d in set(summ['dataset'])]
    order += sorted(set(summ['dataset']) - set(order))
    for ds in order:
        s = summ[summ.dataset == ds].set_index(['setup', 'model'])
        setups = [x for x in ('A', 'B', 'C') if x in set(summ[summ.dataset == ds]['setup'])]
        paper = PAPER.get(subject_of(ds))
        L.append(f"## {cell_title(ds)}\n\n### Accuracy (PCC, %)\n")
        pcols = list(paper['A']) if paper else []
        L.append('| Setup | ' + ''.join(f'paper {k} | ' for k in pcols) + ' | '.join(models) + ' |')
        L.append('|---' * (1 + len(pcols) + len(models)) + '|')
        for st in setups:
            L.append(f'| {st} | ' + ''.join(f'{v:.1f} | ' for v in (paper[st].values() if paper else [])) +
                     ' | '.join(fmt(*cell(s, st, m, 'accuracy'), pct=True) for m in models) + ' |')
        for metric, title in (('roc_auc', 'ROC-AUC'), ('balanced_accuracy', 'Balanced accuracy'), ('f1_at_risk', 'F1 of the at-risk class'),
                              ('brier', 'Brier score of P(pass) (lower is better)')):
            if f'{metric}_ci' not in s: continue
            L.append(f"\n### {title} (not reported by the paper)\n")
            L.append('| Setup | ' + ' | '.join(models) + ' |'); L.append('|---' * (1 + len(models)) + '|')
            for st in setups:
                L.append(f'| {st} | ' + ' | '.join(fmt(*cell(s, st, m, metric)) for m in models) + ' |')
            if metric == 'brier' and 'brier_base' in s:
                L.append('\nBase-rate Brier (always the training fold\'s pass rate): ' +
                         '; '.join(f"{st} {fmt(s.loc[(st, 'selected'), 'brier_base'])}" for st in setups if (st, 'selected') in s.index))
        L.append('\nModels picked by the selection rule (outer folds): ' +
                 '; '.join(f"{st}: " + ', '.join(f'{k} {v}' for k, v in sorted(chosen.get((ds, st), {}).items(), key=lambda kv: -kv[1]))
                           for st in setups) + '\n')
    L.append(goals(summ, per_run, op_rule(bp)))
    if a.pool and rows is not None: L.append(pooling_effect(rows, a.subjects, a.folds))
    return '\n'.join(L) + '\n'


def corrected_se(d: pd.Series, # paired differences, one per outer fold
                 test_share: float, # share of the rows in an outer test fold (1 / folds)
                ) -> float:
    """Standard error of the mean of `d` corrected for the overlap of the outer training folds (Nadeau & Bengio 2003: the
    variance is multiplied by 1/J + n_test/n_train instead of 1/J), as in scikit-learn's example "Statistical comparison
    of models using grid search"; the plain 1/J would call differences significant far too often."""
    d = d.dropna()
    return float(np.sqrt((1 / len(d) + test_share / (1 - test_share)) * d.var(ddof=1)))


def pooling_effect(rows: pd.DataFrame, subjects: list, folds: int) -> str:
    """Paired comparison of `selected` trained on both subjects (`pool:<s>`) with `selected` trained on subject s alone
    (`<s>`): the same outer test students in every fold (`--pool`), per-fold differences (pooled minus alone)."""
    sel = rows[rows.model == 'selected']
    shown = [(m, t, k) for m, t, k in (('roc_auc', 'ROC-AUC', 1), ('brier', 'Brier', 1), ('accuracy', 'accuracy (points)', 100)) if m in sel]
    L = ["## Does pooling both subjects help? Paired outer folds\n",
         "Each outer fold scores `selected` trained on the subject alone and `selected` trained on both subjects on the **same** "
         "test students (the pooled folds, grouped by student). Differences are pooled minus alone, per fold; the interval is "
         "the mean difference ± t(0.975, folds - 1) x its standard error corrected for the overlap of the training folds "
         "(Nadeau & Bengio 2003). Pooling would be kept only where the ROC-AUC interval lies above 0 without a worse Brier score.\n",
         "| Cell | folds | " + ' | '.join(f'{t}: alone / pooled | difference [95%]' for _, t, _ in shown) + " | folds where pooling raised it |",
         "|---|---|" + '---|---|' * len(shown) + "---|"]
    for st in sorted(set(sel['setup']), key='ABC'.index):
        for sub in subjects:
            alone = sel[(sel.dataset == sub) & (sel.setup == st)].set_index(['run', 'fold'])
            both = sel[(sel.dataset == f'pool:{sub}') & (sel.setup == st)].set_index(['run', 'fold'])
            j = alone.join(both, suffixes=('_alone', '_pool'), how='inner')
            if len(j) < 2: continue
            out = []
            for m, _, k in shown:
                d, nd = (j[f'{m}_pool'] - j[f'{m}_alone']) * k, 3 if k == 1 else 2
                h = stats.t.ppf(0.975, d.count() - 1) * corrected_se(d, 1 / folds)
                out.append(f"{j[f'{m}_alone'].mean() * k:.{nd}f} / {j[f'{m}_pool'].mean() * k:.{nd}f} | "
                           f"{d.mean():+.{nd}f} [{d.mean() - h:+.{nd}f}, {d.mean() + h:+.{nd}f}]")
            m0 = shown[0][0]
            up = int((j[f'{m0}_pool'] > j[f'{m0}_alone']).sum()) if m0 != 'brier' else int((j[f'{m0}_pool'] < j[f'{m0}_alone']).sum())
            L.append(f"| {sub} {st} | {len(j)} | " + ' | '.join(out) + f" | {shown[0][1]}: {up} of {len(j)} |")
    return '\n'.join(L) + '\n'


AUC_GOAL = {'mat': .75, 'por': .87}   # issue 14, setup C
ECE_GOAL = .05


def goals(summ: pd.DataFrame, per_run: pd.DataFrame|None=None, rule: dict|None=None) -> str:
    "Issue 14's goals, measured on the `selected` (calibrated) pipeline, per cell (`rule`: the operating threshold's, `op_rule`)."
    rule = rule or op_rule(load_params())
    s = summ[summ.model == 'selected'].set_index(['dataset', 'setup'])
    e = per_run.groupby(['dataset', 'setup'])['ece'].agg(['mean', 'count']) if per_run is not None and len(per_run) else None
    L = ["## Goals (issue 14), measured on `selected`\n", "| Cell | Goal | Ours | Met | Short by |", "|---|---|---|---|---|"]
    def row(c, label, ok, ours, by): L.append(f"| {c} | {label} | {ours} | {'yes' if ok else '**no**'} | {'' if ok else by} |")
    rank = {d: i for i, d in enumerate(('mat', 'por', 'pool:mat', 'pool:por'))}
    for (ds, st), r in sorted(s.iterrows(), key=lambda kv: (rank.get(kv[0][0], 9), kv[0])):
        c, sub = f'{ds} {st}', subject_of(ds)
        if sub in PAPER:
            best = max(PAPER[sub][st].values()); acc = r.accuracy * 100
            row(c, f'PCC at least the best published cell ({best:.1f}%)', acc >= best, f'{acc:.2f}%', f'{best - acc:.2f} points')
        if st == 'C' and sub in AUC_GOAL:
            row(c, f'ROC-AUC at least {AUC_GOAL[sub]}', r.roc_auc >= AUC_GOAL[sub], f'{r.roc_auc:.3f}', f'{AUC_GOAL[sub] - r.roc_auc:.3f}')
        if 'brier' in r and r.brier == r.brier:
            row(c, f'Brier below the base rate ({r.brier_base:.3f})', r.brier < r.brier_base, f'{r.brier:.3f}', f'{r.brier - r.brier_base:.3f}')
        if e is not None and (ds, st) in e.index:
            v = e.loc[(ds, st), 'mean']
            row(c, f'ECE at most {ECE_GOAL} (of each run\'s test students; mean over {int(e.loc[(ds, st), "count"])} run(s))', v <= ECE_GOAL, f'{v:.4f}', f'{v - ECE_GOAL:.4f}')
    if e is not None:
        g = per_run.groupby(['dataset', 'setup'])
        w, n_op = g[RUN_METRICS[1:]].mean(), g['op_threshold'].count()
        L += ['', "### Early warning: whom `selected` flags as at risk\n",
              "Over all the test students of a run (mean of the runs). A student is flagged when the risk (1 - P(pass)) is at least "
              "the threshold. **operating**: the threshold the deployed model uses, chosen in each outer fold on that fold's "
              f"training students only, by the evaluation stage's rule (`evaluate.threshold`: {rule['constraint']} at least "
              f"{rule['min']} on their out-of-fold P(pass), then the best {rule['maximize']}); its mean over folds is shown, and in how many folds "
              f"the rule reached its recall on the training students. **default**: {DEFAULT_THRESHOLD}.\n",
              "| Cell | at-risk students | threshold | flagged | recall of at-risk | precision of a flag (0 if none) | runs |",
              "|---|---|---|---|---|---|---|"]
        for (ds, st), r in sorted(w.iterrows(), key=lambda kv: (rank.get(kv[0][0], 9), kv[0])):
            if n_op[(ds, st)]:
                L.append(f"| {ds} {st} | {r.at_risk_share:.1%} | operating: {r.op_threshold:.3f} (reached in {r.op_reached:.0%} of folds) "
                         f"| {r.op_flagged_share:.1%} | {r.op_recall_at_risk:.3f} | {r.op_precision_at_risk:.3f} | {int(n_op[(ds, st)])} |")
            L.append(f"| {ds} {st} | {r.at_risk_share:.1%} | default: {DEFAULT_THRESHOLD} | {r.flagged_share:.1%} | {r.recall_at_risk:.3f} "
                     f"| {r.precision_at_risk:.3f} | {int(e.loc[(ds, st), 'count'])} |")
        if n_op.sum():
            near = int(per_run['op_near'].fillna(0).sum())
            L.append(f"\nThe fold files keep P(pass) to 6 decimals. {near} test prediction(s) (one per student and run) have a kept "
                     f"risk within {P_ROUND:g} of their fold's operating threshold" + (": their recomputed flag may differ from the fold's own."
                                                                                       if near else ", so every recomputed flag is the fold's own."))
    return '\n'.join(L) + '\n'


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--full', action='store_true', help='the paper\'s protocol: 20 runs x 10 folds, the full grids, inner folds = '
                                                       'model.cv_folds (default: 2 x 10, quick grids, 3 inner folds)')
    ap.add_argument('--runs', type=int, help='outer runs (the paper: 20)')
    ap.add_argument('--folds', type=int, help='outer folds (the paper: 10)')
    ap.add_argument('--inner-folds', type=int, help='folds of the tuning CV inside each outer training fold')
    ap.add_argument('--quick', action='store_true', default=None, help="use the `quick` grids of params.yaml")
    ap.add_argument('--pool', action='store_true', help='also train on both subjects pooled (a subject column; folds grouped by '
                                                       'student) and score each subject\'s cell: `pool:mat`, `pool:por`')
    ap.add_argument('--n-jobs', type=int, default=2, help='outer folds run in parallel (each fit uses one core; with a scheduler: the cluster decides)')
    ap.add_argument('--scheduler', help="run the outer folds on Dask: 'local' (a LocalCluster here) or tcp://host:8786 (default: engine.scheduler)")
    ap.add_argument('--workers', type=int, help='with --scheduler local: worker processes (default: engine.workers)')
    ap.add_argument('--datasets', default='mat,por', help='comma-separated: mat, por, demo or a CSV path')
    ap.add_argument('--setups', default='A,B,C')
    ap.add_argument('--ensembles', default=None, help="comma-separated ensembles to build in each fold, '' for none (default: params.yaml)")
    ap.add_argument('--seed', type=int, default=None, help='first seed (default: run.seed)')
    ap.add_argument('--data-dir', help='folder with student-mat.csv and student-por.csv')
    ap.add_argument('--params', help='parameters file (default: the project params.yaml)')
    ap.add_argument('--set', action='append', metavar='KEY=VALUE', help='override a parameter (as `studentperf run --set`); part of the fingerprint')
    ap.add_argument('--results', help='folder of the per-fold results (default: benchmarks/results/folds/<fingerprint>)')
    ap.add_argument('--max-folds', type=int, help='compute at most this many new outer folds, then report what is done (resume later)')
    ap.add_argument('--out', help='write the markdown report here (also printed) and the per-fold scores beside it (.csv)')
    ap.add_argument('--from-csv', help='only re-render the report from the per-fold scores of an earlier run (same other flags; with '
                                       '--pool, a run whose single-subject cells used the pooled folds: results folders made '
                                       'before 2026-11-29 did not)')
    ap.add_argument('--minutes', type=float, help='with --from-csv: the wall time of the run that made the csv')
    ap.add_argument('--picks-from', help="with --from-csv: the run's own report, for the models the rule picked (else recovered "
                                         "from equal scores, ambiguous when two models tie on a fold)")
    a = ap.parse_args(argv)
    argv = list(argv if argv is not None else sys.argv[1:])
    a.overrides = parse_set(a.set)
    base = load_params(a.params, a.overrides)
    for k, v in (FULL if a.full else REDUCED).items():
        if getattr(a, k) is None: setattr(a, k, v)
    if a.inner_folds is None: a.inner_folds = int(base['model']['cv_folds'])
    if a.ensembles is not None: a.ensembles = [e for e in a.ensembles.split(',') if e]
    if a.seed is None: a.seed = base['run']['seed']
    a.setups, a.datasets = a.setups.split(','), a.datasets.split(',')
    a.subjects, a.bins = [], int(base['evaluate']['calibration_bins'])
    if a.from_csv:
        rows = pd.read_csv(a.from_csv)
        if a.pool: a.subjects = [dataset_name(ds) for ds in a.datasets]
        cmd = list(argv)
        i = cmd.index('--from-csv'); cmd = cmd[:i] + cmd[i + 2:]
        for f in ('--minutes', '--picks-from'):
            if f in cmd: i = cmd.index(f); cmd = cmd[:i] + cmd[i + 2:]
        picks = picks_from_md(Path(a.picks_from)) if a.picks_from else picks_from_rows(rows)
        md = report(summarise(rows), picks, a, (a.minutes or 0) * 60, ['benchmarks/paper_comparison.py'] + cmd, rows=rows)
        if a.out: write_text(a.out, md)
        print(md); return
    names = {ds: dataset_name(ds) for ds in a.datasets}   # a CSV path: its file name names the cell
    data = {names[ds]: load_dataset(base, ds, a.data_dir).data for ds in a.datasets}
    a.datasets = list(data)
    if a.pool:
        a.subjects = list(a.datasets)
        if len(a.subjects) < 2: raise SystemExit(f"--pool needs at least two subjects in --datasets, got {a.datasets}")
        data['pool'] = pool_tables({s: data[s] for s in a.subjects}, base)
        a.datasets = [*a.datasets, 'pool']
    config = config_record(a)
    fp = _sha(config)[:16]
    folder = Path(a.results) if a.results else Path(__file__).parent/'results'/'folds'/fp
    open_results(folder, config, {ds: data_sha(df) for ds, df in data.items()})
    t0 = time.time()
    eng = {k: v for k, v in {'engine.scheduler': a.scheduler, 'engine.workers': a.workers}.items() if v}
    with scale.engine(load_params(a.params, {**a.overrides, **eng})) as client:   # outer folds as Dask tasks when a scheduler is set
        if client is not None: a.n_jobs = -1
        computed = run_folds(data, a, folder, fp)
    rows, chosen, secs, per_run = load_folds(folder, a, fp)
    done = rows.groupby(['dataset', 'setup', 'run', 'fold']).ngroups if len(rows) else 0
    n_expected = sum(len(a.subjects) if ds == 'pool' else 1 for ds in a.datasets) * len(a.setups) * a.runs * a.folds
    log.info('computed %d outer fold(s) in %.0f s; %d of %d fold results are in %s', computed, time.time() - t0, done, n_expected, folder)
    if not len(rows): print(f'no fold is done yet in {folder}'); return None
    summ = summarise(rows)
    md = report(summ, chosen, a, secs, ['benchmarks/paper_comparison.py'] + argv, done=(done, n_expected), per_run=per_run, rows=rows)
    if a.out:
        write_text(a.out, md)
        rows.round(6).to_csv(Path(a.out).with_suffix('.csv'), index=False)
    print(md)
    return summ


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
    main()
