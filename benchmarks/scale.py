#!/usr/bin/env python
"""Scale-out with Dask: batch scoring of generated rows with and without `--scheduler local`, and the paper benchmark's
outer folds with 1 and 2 workers.

    python benchmarks/scale.py --rows 1000000,10000000 --out benchmarks/results/scale.md

Each scoring run is a fresh child process, so its peak resident memory (`ru_maxrss`) is that of the client process alone
(Dask workers are separate processes). The model is the demo pipeline with the logistic-regression candidate.
The paper folds need the UCI files (`--data-dir`, `$STUDENTPERF_DATA_DIR` or params.yaml); without them that part is skipped.
"""
from __future__ import annotations
import argparse, importlib.util, json, os, platform, resource, subprocess, sys, tempfile, time
from argparse import Namespace
from pathlib import Path
import pandas as pd
from studentperf import scale
from studentperf.config import load_params, write_text
from studentperf.data import make_demo, data_dir

ROOT = Path(__file__).resolve().parents[1]
TINY = {'run.quick': True, 'model.candidates': ['logreg'], 'model.ensembles': [], 'model.imbalance': ['none']}


def make_model(folder: Path) -> Path:
    "Train the demo pipeline (logistic regression) into `folder`; its models folder."
    from studentperf.data import run_prepare
    from studentperf.modeling import run_model
    from studentperf.evaluation import run_evaluate
    from studentperf.handoff import run_handoff
    p = load_params(overrides=TINY)
    run_prepare(p, folder); run_model(p, folder, progress=False); run_evaluate(p, folder); run_handoff(p, folder)
    return folder/'models'


def make_input(path: Path, rows: int) -> Path:
    "`rows` generated students (the demo generator's 666-row block repeated, its invalid rows included) as one `;` CSV."
    block = make_demo().drop(columns=['G1', 'G2', 'G3'], errors='ignore')
    text = block.to_csv(sep=';', index=False)
    header, body = text.split('\n', 1)
    lines = body.splitlines(keepends=True)
    with open(path, 'w') as f:
        f.write(header + '\n')
        full, rest = divmod(rows, len(lines))
        for _ in range(full): f.write(body)
        f.writelines(lines[:rest])
    return path


def child(mode: str, model: str, inp: str, out: str) -> dict:
    "One scoring run in this process: `single` (handoff.predict_file) or `local` (predict_distributed, 2 workers)."
    t0 = time.time()
    if mode == 'single':
        from studentperf.handoff import predict_file
        c = predict_file(model, inp, out, progress=False)
    else:
        with scale.connect('local', workers=2) as client:
            t1 = time.time()
            c = scale.predict_distributed(model, inp, out, client, progress=False)
        c['cluster_start_s'] = round(t1 - t0, 2)
    secs = time.time() - t0
    return {'mode': mode, 'rows_read': c['rows_read'], 'rows_scored': c['rows_scored'], 'rows_quarantined': c['rows_quarantined'],
            'seconds': round(secs, 2), 'rows_per_s': round(c['rows_read'] / secs), 'partitions': c.get('partitions'),
            'cluster_start_s': c.get('cluster_start_s'), 'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def scoring(rows: list, work: Path) -> list:
    model = make_model(work/'run')
    res = []
    for n in rows:
        inp = make_input(work/f'in-{n}.csv', n)
        for mode in ('single', 'local'):
            out = work/(f'out-{mode}-{n}' + ('.csv' if mode == 'single' else ''))
            r = subprocess.run([sys.executable, __file__, '--child', mode, str(model), str(inp), str(out)], capture_output=True, text=True)
            if r.returncode: raise SystemExit(r.stderr)
            res.append({'rows': n, 'input_mb': round(inp.stat().st_size / 2**20), **json.loads(r.stdout.strip().splitlines()[-1])})
            print(res[-1], flush=True)
        inp.unlink()
    return res


def paper_folds(workers: list, folds: int, data: str|None) -> list:
    "Outer folds of the paper benchmark (Portuguese, setup C, quick grids) on a LocalCluster of 1 and 2 workers."
    spec = importlib.util.spec_from_file_location('paper_comparison', ROOT/'benchmarks'/'paper_comparison.py')
    pc = importlib.util.module_from_spec(spec); spec.loader.exec_module(pc)
    from studentperf.data import load_dataset
    base = load_params()
    try: df = load_dataset(base, 'por', data).data
    except Exception as e: print(f'paper folds skipped: {e}'); return []
    res = []
    for w in workers:
        a = Namespace(runs=1, folds=folds, seed=base['run']['seed'], quick=True, inner_folds=3, params=None, ensembles=None, n_jobs=-1)
        with scale.engine(load_params(overrides={'engine.scheduler': 'local', 'engine.workers': w})):
            t0 = time.time()
            rows, _ = pc.run_setup(df, 'por', 'C', a)
            secs = time.time() - t0
        res.append({'workers': w, 'folds': folds, 'seconds': round(secs, 1), 's_per_fold': round(secs / folds, 2)})
        print(res[-1], flush=True)
    return res


def report(sc: list, pf: list, argv: list) -> str:
    L = ['# Scale-out with Dask', '', f"Command: `python benchmarks/scale.py {' '.join(argv)}`  ",
         f"Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}  ",
         'Model: demo pipeline, logistic regression. Input: one `;` CSV of generated students (0.3% invalid rows, quarantined). '
         '`single` = `studentperf predict` without a scheduler (streaming, one process); `local` = `--scheduler local` '
         '(LocalCluster, 2 worker processes, 8 MiB blocks, Parquet parts; time includes starting the cluster). '
         'Peak memory is the client process only (fresh process per run).', '',
         '## Batch scoring', '', '| rows | input MB | mode | seconds | rows/s | speed-up | partitions | client peak RSS MB |', '|---|---|---|---|---|---|---|---|']
    single = {r['rows']: r['seconds'] for r in sc if r['mode'] == 'single'}
    for r in sc:
        su = f"{single[r['rows']] / r['seconds']:.2f}" if r['mode'] == 'local' else ''
        L.append(f"| {r['rows']:,} | {r['input_mb']} | {r['mode']} | {r['seconds']} | {r['rows_per_s']:,} | {su} | {r['partitions'] or ''} | {r['peak_rss_mb']} |")
    L += ['', 'Counts: ' + '; '.join(f"{r['rows']:,} {r['mode']}: read {r['rows_read']:,} = scored {r['rows_scored']:,} + quarantined {r['rows_quarantined']:,}" for r in sc)]
    if pf:
        L += ['', '## Paper benchmark outer folds (Portuguese, setup C, quick grids, 1 run)', '',
              '| workers | folds | seconds | seconds per fold |', '|---|---|---|---|']
        L += [f"| {r['workers']} | {r['folds']} | {r['seconds']} | {r['s_per_fold']} |" for r in pf]
    return '\n'.join(L) + '\n'


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == '--child':
        print(json.dumps(child(*argv[1:5]))); return
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rows', default='1000000,10000000', help='comma-separated row counts to score')
    ap.add_argument('--paper-folds', type=int, default=4, help='outer folds for the 1- and 2-worker comparison (0: skip)')
    ap.add_argument('--data-dir', help='UCI data folder for the paper folds')
    ap.add_argument('--work', help='scratch folder (default: a temporary one; needs about 1 GB per 10M rows)')
    ap.add_argument('--out', help='write the markdown report here (also printed)')
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=a.work) as w:
        sc = scoring([int(x) for x in a.rows.split(',') if x], Path(w))
    pf = paper_folds([1, 2], a.paper_folds, a.data_dir) if a.paper_folds else []
    md = report(sc, pf, argv)
    if a.out: write_text(a.out, md)
    print(md)


if __name__ == '__main__':
    main()
