"""Monitoring benchmark (issue 11). Not a test: it prints and writes numbers to compare with the goals.

Trains the demo pipeline's quick logistic-regression model (or uses --models), then over --seeds seeds of windows of
--window simulated predictions (`studentperf.drift.simulate_stream`):
  * false alarm rate of dataset drift on the `none` scenario (goal: at most 5%), and of prediction drift beside it;
  * detection rate of the `covariate` scenario (goal: at least 95%): dataset drift, prediction drift, and either;
  * `concept` scenario: performance "degraded" once 150 outcomes are in (and the same rule's false rate on `none`);
  * the retraining gate: a challenger refitted on newer concept data (better on the newest window) is promoted, one
    refitted on shuffled labels (worse) is refused, on --gate-seeds seeds;
  * prediction-log overhead: p50 of scoring one student with and without `PredictionLog.record` (SQLite store);
  * the same drift verdict from the prediction log (SQLite) as from the scored rows.

usage: nice -n 10 python benchmarks/monitoring.py [--seeds 200] [--window 200] [--gate-seeds 20] [--models OUT/models] [--out FILE.md]
"""
import argparse, os, platform, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import pandas as pd
from sklearn.base import clone
from studentperf import drift, handoff, monitoring
from studentperf.config import load_params

TINY = {'run.quick': True, 'model.candidates': ['logreg'], 'model.ensembles': [], 'model.imbalance': ['none']}


def train(work):
    from studentperf.data import run_prepare
    from studentperf.modeling import run_model
    from studentperf.evaluation import run_evaluate
    p = load_params(overrides=TINY)
    run_prepare(p, work); run_model(p, work, progress=False); run_evaluate(p, work); handoff.run_handoff(p, work)
    return work/'models'


def scored(art, scenario, n, seed):
    req, oc = drift.simulate_stream(scenario, n, seed)
    X = handoff.model_input(req, art)
    return req, X, handoff.score(art, X)['probability_pass'].to_numpy(), oc['pass'].to_numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seeds', type=int, default=200); ap.add_argument('--window', type=int, default=200)
    ap.add_argument('--outcomes', type=int, default=150); ap.add_argument('--gate-seeds', type=int, default=20)
    ap.add_argument('--models'); ap.add_argument('--out')
    a = ap.parse_args()
    t0 = time.time()
    params = load_params()
    s = drift.monitor_settings(params)
    models = Path(a.models) if a.models else train(Path(tempfile.mkdtemp(prefix='mon-bench-')))
    art = handoff.load_artifact(models)
    ref = drift.load_reference(art.path)
    res = {sc: [] for sc in drift.SCENARIOS}
    for seed in range(a.seeds):
        for sc in drift.SCENARIOS:
            req, X, p, y = scored(art, sc, a.window, seed)
            r = {}
            if sc != 'concept':
                d = drift.drift_report(ref, X, p, art.threshold, s['drift_share'], s['min_window'], s['drift']['alpha'], s['drift']['distance'])
                r.update(dataset=d['dataset_drift'], prediction=d['prediction_drift'], columns=len(d['drifted_columns']),
                         absences='absences' in d['drifted_columns'], failures='failures' in d['drifted_columns'])
            if sc != 'covariate':
                k = a.outcomes
                pr = drift.performance_report(y[:k], p[:k], art.threshold, art.card, s['tolerance'], s['performance']['min_outcomes'],
                                              s['performance']['metrics'], s['performance']['bootstrap'], seed)
                r.update(degraded=pr['degraded'], auc=pr['metrics']['roc_auc']['estimate'])
            res[sc].append(r)
    t_drift = time.time() - t0
    none, cov, con = (pd.DataFrame(res[k]) for k in drift.SCENARIOS)

    # the gate: refit the champion's pipeline on newer data; the newest window is never trained on
    gate, rule, th = [], s['promotion'], (art.threshold, art.threshold)
    for seed in range(a.gate_seeds):
        _, X, pc, y = scored(art, 'concept', 600 + a.window, 1000 + seed)      # the relation changed
        Xt, yt, Xw, yw, pcw = X.iloc[:600], y[:600], X.iloc[600:], y[600:], pc[600:]
        better = clone(art.model).fit(Xt, yt).predict_proba(Xw)[:, 1]
        _, X0, p0, y0 = scored(art, 'none', 600 + a.window, 2000 + seed)      # the relation did not change
        shuffled = clone(art.model).fit(X0.iloc[:600], np.random.default_rng(seed).permutation(y0[:600])).predict_proba(X0.iloc[600:])[:, 1]
        stale = clone(art.model).fit(X0.iloc[:600], y0[:600]).predict_proba(Xw)[:, 1]   # trained on the old relation
        gate.append({'better_promoted': drift.promotion_decision(yw, pcw, better, rule, th)['promote'],
                     'worse_refused': not drift.promotion_decision(y0[600:], p0[600:], shuffled, rule, th)['promote'],
                     'stale_refused': not drift.promotion_decision(yw, pcw, stale, rule, th)['promote']})
    gate = pd.DataFrame(gate)

    # prediction-log overhead and the store round trip
    tmp = Path(tempfile.mkdtemp(prefix='mon-log-'))
    plog = monitoring.PredictionLog(f"sqlite:///{tmp/'predictions.sqlite'}")
    req, X, p, y = scored(art, 'covariate', a.window, 0)
    t_plain, t_log, t_rec = [], [], []
    for i in range(300):
        x = X.iloc[[i % len(X)]]
        t = time.perf_counter(); r = handoff.score(art, x); t_plain.append(time.perf_counter() - t)
        t = time.perf_counter(); r = handoff.score(art, x); t1 = time.perf_counter()
        plog.record(x, r, art.version, art.threshold, [req['student_ref'].iloc[i % len(X)]]); t2 = time.perf_counter()
        t_log.append(t2 - t); t_rec.append(t2 - t1)
    plog.flush(); plog.close()
    sw = drift.store_window(plog.engine if plog.engine is not None else f"sqlite:///{tmp/'predictions.sqlite'}", model_version=art.version)
    sw = sw.drop_duplicates('student_ref').reset_index(drop=True)
    from studentperf import data as spdata
    d_log = drift.drift_report(ref, spdata.with_dtypes(sw.reindex(columns=art.columns), art.card['input_schema']),
                               sw['probability_pass'].to_numpy(), art.threshold, s['drift_share'], s['min_window'])
    d_csv = drift.drift_report(ref, X, p, art.threshold, s['drift_share'], s['min_window'])
    same = d_log['drifted_columns'] == d_csv['drifted_columns'] and d_log['verdict'] == d_csv['verdict']

    pct = lambda b: f"{100 * b.mean():.1f}%"
    p50 = lambda v: 1000 * float(np.median(v))
    lines = [
        '# Monitoring benchmark', '',
        f"command: `nice -n 10 python benchmarks/monitoring.py --seeds {a.seeds} --window {a.window} --gate-seeds {a.gate_seeds}`", '',
        f"model: {art.version} (quick logistic regression on the demo data; setup {art.card['setup']}), "
        f"hold-out ROC-AUC {art.card['metrics']['holdout'].get('roc_auc', float('nan')):.3f}, operating threshold {art.threshold:.3f}; "
        f"reference profile of {ref['n_rows']} training rows (statistical tests: reference <= 1000 rows)", '',
        f"machine: {platform.machine()}, Python {platform.python_version()}, load: `{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}` (shared, 2 cores)", '',
        f"runtime: {time.time() - t0:.0f} s ({t_drift:.0f} s for the {a.seeds} x 3 windows)", '',
        f"## Drift over {a.seeds} windows of {a.window} predictions", '',
        '| scenario | dataset drift | prediction drift | either (an alarm of `check`) | absences drifted | failures drifted | columns drifted (mean) |',
        '|---|---|---|---|---|---|---|',
        f"| none (false alarms) | {pct(none['dataset'])} | {pct(none['prediction'])} | {pct(none['dataset'] | none['prediction'])} | {pct(none['absences'])} | {pct(none['failures'])} | {none['columns'].mean():.2f} |",
        f"| covariate (detections) | {pct(cov['dataset'])} | {pct(cov['prediction'])} | {pct(cov['dataset'] | cov['prediction'])} | {pct(cov['absences'])} | {pct(cov['failures'])} | {cov['columns'].mean():.2f} |", '',
        f"Goals: false alarm rate of dataset drift on `none` <= 5%: **{'met' if none['dataset'].mean() <= .05 else 'NOT met'}** ({pct(none['dataset'])}). "
        f"Detection of `covariate` >= 95%: dataset drift {pct(cov['dataset'])}; prediction drift {pct(cov['prediction'])}; "
        f"either: **{'met' if (cov['dataset'] | cov['prediction']).mean() >= .95 else 'NOT met'}** ({pct(cov['dataset'] | cov['prediction'])}).", '',
        f"## Performance once {a.outcomes} outcomes are in ({a.seeds} windows, {s['performance']['bootstrap']} bootstrap resamples, tolerance {s['tolerance']})", '',
        '| scenario | degraded | mean ROC-AUC |', '|---|---|---|',
        f"| none (false) | {pct(none['degraded'])} | {none['auc'].mean():.3f} |",
        f"| concept (detections) | {pct(con['degraded'])} | {con['auc'].mean():.3f} |", '',
        f"Goal: concept degradation detected once {a.outcomes} outcomes are in: **{'met' if con['degraded'].mean() >= .95 else 'NOT met'}** ({pct(con['degraded'])}).", '',
        f"## Retraining gate ({a.gate_seeds} seeds; each challenger judged on the next {a.window} students, never trained on)", '',
        f"rule: {s['promotion']}", '',
        f"* concept scenario, challenger refitted on 600 newer students (better on the newest window): promoted in **{pct(gate['better_promoted'])}**",
        f"* no change, challenger refitted on shuffled labels (worse than the champion): refused in **{pct(gate['worse_refused'])}**",
        f"* concept scenario, challenger refitted on 600 students of the old relation (no better on the newest window): refused in **{pct(gate['stale_refused'])}**", '',
        '## Prediction log', '',
        f"p50 of scoring one student in-process: {p50(t_plain):.3f} ms without logging, {p50(t_log):.3f} ms with `PredictionLog.record` "
        f"(SQLite, background writer); "
        f"the `record` call itself: p50 {p50(t_rec):.3f} ms, p99 {1000 * float(np.percentile(t_rec, 99)):.3f} ms (goal: <= 1 ms added at p50: "
        f"**{'met' if p50(t_rec) <= 1 else 'NOT met'}**); written {plog.written}, errors {plog.errors}. In-process timing, not through the API: "
        "the difference of the two p50s is within the noise of a shared machine; part 1 measures `/predict`.", '',
        f"drift verdict from the log (store_window) equals the verdict from the scored rows: **{same}** ({d_log['verdict']}; {d_log['drifted_columns']})", '',
    ]
    text = '\n'.join(lines)
    print(text)
    if a.out: Path(a.out).write_text(text)


if __name__ == '__main__': main()
