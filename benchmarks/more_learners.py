#!/usr/bin/env python
"""Learners and ensembles the modeling stage does not use, beside those it does (issue 14: "gradient-boosting libraries
that install with pandas 3.1 (LightGBM, CatBoost) beside scikit-learn's; stacking over calibrated members ... each kept
only if repeated CV says so").

Setup C (no prior grades) of both UCI subjects, the same outer folds for every learner (5 x 5-fold repeated stratified
CV), so the differences are paired fold by fold, and the same features (this project's preprocessor for the setup:
imputation, one-hot, scaling, engineered features). Scored on the outer test folds by the modeling stage's `score_all`
(ROC-AUC, Brier score of P(pass), accuracy, ...; the CSV keeps them all). No resampling and no recalibration beyond what a learner says.

- single learners (`logreg`, `hgb`, `lightgbm`, `catboost`): a grid of four points tuned by an inner 3-fold CV on ROC-AUC;
- ensembles of four members at fixed mid-grid settings (`logreg` C=0.1, `forest` 200 trees with leaves of 5, `hgb`
  learning rate 0.05 and depth 3, `svm` RBF C=1 with its Platt scaling), built by the modeling stage's `make_ensemble`:
  `voting` (soft voting), `stacking` (a logistic meta-model on the members' out-of-fold P(pass)) and `stacking_calibrated`
  (the same, each member first recalibrated by a sigmoid with `modeling.calibrated`).

LightGBM and CatBoost are not dependencies of the project; install them next to it first, e.g.

    pip install --no-deps --target /tmp/boost lightgbm==4.7.0 catboost==1.2.10
    PYTHONPATH=/tmp/boost python benchmarks/more_learners.py --out benchmarks/results/more_learners.md
"""
from __future__ import annotations
import argparse, copy, os, platform, sys, time, warnings
from datetime import datetime, timezone
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from tqdm.auto import tqdm
import sklearn
from studentperf.config import load_params, set_dotted, write_text
from studentperf.data import load_dataset
from studentperf.features import build_preprocessor, split_xy
from studentperf.modeling import calibrated, candidate_pipeline, clf_prefix, make_ensemble, score_all

SUBJECT = {'mat': 'Mathematics', 'por': 'Portuguese'}


def learners(seed: int) -> dict:
    "{name: (estimator, grid)}: four grid points each (the project's hgb grid; the same shape for the two libraries)."
    import lightgbm, catboost
    return {
        'logreg': (LogisticRegression(max_iter=5000, random_state=seed), {'C': [0.01, 0.03, 0.1, 1]}),
        'hgb': (HistGradientBoostingClassifier(max_iter=100, l2_regularization=1.0, early_stopping=False, random_state=seed),
                {'learning_rate': [0.05, 0.1], 'max_depth': [2, 3]}),
        'lightgbm': (lightgbm.LGBMClassifier(n_estimators=100, reg_lambda=1.0, min_child_samples=20, random_state=seed,
                                             n_jobs=1, verbose=-1), {'learning_rate': [0.05, 0.1], 'max_depth': [2, 3]}),
        'catboost': (catboost.CatBoostClassifier(iterations=200, l2_leaf_reg=3.0, random_seed=seed, thread_count=1,
                                                 verbose=0, allow_writing_files=False),
                     {'learning_rate': [0.05, 0.1], 'depth': [2, 3]}),
    }


MEMBERS = {'logreg': {'C': 0.1}, 'forest': {'n_estimators': 200, 'min_samples_leaf': 5},
           'hgb': {'learning_rate': 0.05, 'max_depth': 3, 'max_iter': 100, 'l2_regularization': 1.0}, 'svm': {'kernel': 'rbf', 'C': 1}}
ENSEMBLES = ('voting', 'stacking', 'stacking_calibrated')


def ensembles(params: dict) -> dict:
    "{name: unfitted ensemble}: the modeling stage's own ensembles of `MEMBERS` (raw, or each recalibrated by a sigmoid)."
    members = {n: candidate_pipeline(n, params).set_params(**{f'{clf_prefix(n)}{k}': v for k, v in grid.items()})
               for n, grid in MEMBERS.items()}
    sig = {n: calibrated(m, 'sigmoid', params) for n, m in members.items()}
    return {'voting': make_ensemble('voting', members, params), 'stacking': make_ensemble('stacking', members, params),
            'stacking_calibrated': make_ensemble('stacking', sig, params)}


def _scores(model, X, y, tr, te) -> dict:
    "Fit on the outer training rows; the modeling stage's `score_all` on the outer test rows, and the fitting time."
    t0 = time.time(); model.fit(X.iloc[tr], y.iloc[tr])
    return {**score_all(model, X.iloc[te], y.iloc[te]), 'seconds': time.time() - t0}


def one_fold(X, y, tr, te, params, seed, names):
    "Tune and fit each learner named in `names` on the outer training fold; score it on the outer test fold."
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for name, (est, grid) in learners(seed).items():
            if name not in names: continue
            pipe = Pipeline([('prep', build_preprocessor(params)), ('clf', clone(est))])
            gs = GridSearchCV(pipe, {f'clf__{k}': v for k, v in grid.items()}, scoring='roc_auc',
                              cv=StratifiedKFold(3, shuffle=True, random_state=seed), n_jobs=1)
            out[name] = _scores(gs, X, y, tr, te)
        for name, model in ensembles(params).items():
            if name in names: out[name] = _scores(model, X, y, tr, te)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--datasets', default='mat,por')
    ap.add_argument('--setup', default='C')
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--folds', type=int, default=5)
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--n-jobs', type=int, default=2)
    ap.add_argument('--data-dir')
    ap.add_argument('--learners', default='logreg,hgb,lightgbm,catboost,' + ','.join(ENSEMBLES))
    ap.add_argument('--out')
    a = ap.parse_args(argv)
    names = a.learners.split(',')
    import lightgbm, catboost
    base = load_params()
    p = copy.deepcopy(base)
    for k, v in {'run.setup': a.setup, 'run.seed': a.seed, 'model.n_jobs': 1}.items(): set_dotted(p, k, v)
    rows, t0 = [], time.time()
    for ds in a.datasets.split(','):
        X, y = split_xy(load_dataset(p, ds, a.data_dir).data, p)
        splits = list(RepeatedStratifiedKFold(n_splits=a.folds, n_repeats=a.repeats, random_state=a.seed).split(X, y))
        res = Parallel(n_jobs=a.n_jobs)(delayed(one_fold)(X, y, tr, te, p, a.seed, names) for tr, te in tqdm(splits, desc=ds))
        for k, r in enumerate(res):
            for name, s in r.items(): rows.append({'dataset': ds, 'fold': k, 'model': name, **s})
    df = pd.DataFrame(rows)
    L = ["# More learners and ensembles, paired with the modeling stage's (setup " + a.setup + ")\n",
         f"Generated by `benchmarks/more_learners.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
         f"({(time.time() - t0) / 60:.1f} min on {os.cpu_count()} cores).\n", "```",
         "python benchmarks/more_learners.py " + " ".join(argv if argv is not None else sys.argv[1:]), "```\n",
         f"Python {platform.python_version()}, scikit-learn {sklearn.__version__}, LightGBM {lightgbm.__version__}, "
         f"CatBoost {catboost.__version__}. Outer protocol: {a.repeats} x {a.folds}-fold repeated stratified CV (seed "
         f"{a.seed}), the same folds for every learner; the project's preprocessor for the setup. Single learners: inside "
         "each training fold a 4-point grid tuned by 3-fold CV on ROC-AUC. Ensembles (`voting`, `stacking`, "
         "`stacking_calibrated`): the modeling stage's `make_ensemble` of four members at fixed mid-grid settings "
         f"({', '.join(MEMBERS)}); `stacking_calibrated` recalibrates each member by a sigmoid first. Each model's own "
         "probabilities (no resampling, no recalibration of the whole). Mean over the outer folds, ± the standard deviation over folds; the paired column is the mean "
         "fold-by-fold difference from `hgb` with its standard error (a difference within about two standard errors "
         "is noise).\n"]
    for ds in a.datasets.split(','):
        d = df[df.dataset == ds]
        piv = {m: d.pivot(index='fold', columns='model', values=m) for m in ('roc_auc', 'brier', 'accuracy')}
        L += [f"## {SUBJECT.get(ds, ds)} (`{ds}`), {len(piv['roc_auc'])} outer folds\n",
              "| learner | ROC-AUC | AUC - hgb (paired) | Brier | Brier - hgb (paired) | accuracy | fit + tune s/fold |",
              "|---|---|---|---|---|---|---|"]
        for m in [n for n in names if n in piv['roc_auc']]:
            cells = []
            for met in ('roc_auc', 'brier'):
                v = piv[met][m]; diff = v - piv[met]['hgb']
                cells += [f"{v.mean():.3f} ±{v.std(ddof=1):.3f}",
                          '' if m == 'hgb' else f"{diff.mean():+.3f} (se {diff.std(ddof=1) / np.sqrt(len(diff)):.3f})"]
            acc = piv['accuracy'][m]
            secs = d[d.model == m]['seconds'].mean()
            L.append(f"| `{m}` | " + ' | '.join(cells) + f" | {acc.mean() * 100:.1f}% | {secs:.1f} |")
        L.append('')
    md = '\n'.join(L) + '\n'
    if a.out:
        write_text(a.out, md)
        df.round(6).to_csv(os.path.splitext(a.out)[0] + '.csv', index=False)
    print(md)


if __name__ == '__main__':
    main()
