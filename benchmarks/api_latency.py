"""API latency benchmark (issue: handoff). Not a test: it prints numbers to compare with the goals.

Starts `studentperf serve` on a free loopback port, sends a bounded number of requests, and prints p50/p99 latency and
requests/s for POST /predict and for POST /predict/batch with 1000 students, beside the in-process `predict_proba`
time of the same model on the same rows; then times batch scoring (`predict_file`) of 100,000 rows.

Goals: single-request p50 < 5 ms and at most 2 ms above in-process prediction; >= 500 requests/s on one worker;
100,000 rows batch-scored in < 10 s.

usage: python benchmarks/api_latency.py [--model OUT/models] [--requests 500] [--batch-requests 20] [--rows 100000] [--out FILE.md]
(without --model it trains the demo pipeline's quick model into a temporary folder first)
"""
import argparse, json, os, platform, socket, statistics, subprocess, sys, tempfile, threading, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
import pandas as pd
from studentperf import handoff, data
from studentperf.config import load_params


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def post(url, body):
    req = urllib.request.Request(url, data=body, headers={'content-type': 'application/json'})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as r: r.read(); assert r.status == 200
    return (time.perf_counter() - t) * 1000


def pct(xs, q): return float(np.percentile(xs, q))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model'); ap.add_argument('--requests', type=int, default=500); ap.add_argument('--batch-requests', type=int, default=20)
    ap.add_argument('--rows', type=int, default=100_000); ap.add_argument('--concurrency', type=int, default=4); ap.add_argument('--out')
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix='api-bench-'))
    if not a.model:
        from studentperf.data import run_prepare
        from studentperf.modeling import run_model
        from studentperf.evaluation import run_evaluate
        p = load_params(overrides={'run.quick': True})
        run_prepare(p, work); run_model(p, work, progress=False); run_evaluate(p, work); handoff.run_handoff(p, work)
        a.model = str(work/'models')
    art = handoff.load_artifact(a.model)
    students = data.synthetic_students(1000, seed=7)[art.columns]
    rows = [json.loads(r.to_json()) for _, r in students.iterrows()]
    X1 = handoff.model_input(students.iloc[[0]], art)
    X1000 = handoff.model_input(students, art)
    inproc1 = [(lambda t: (art.model.predict_proba(X1), (time.perf_counter() - t) * 1000)[1])(time.perf_counter()) for _ in range(200)]
    inproc1000 = [(lambda t: (art.model.predict_proba(X1000), (time.perf_counter() - t) * 1000)[1])(time.perf_counter()) for _ in range(10)]

    port = free_port()
    cli = str(Path(sys.executable).parent/'studentperf')
    proc = subprocess.Popen([cli, 'serve', '--model', a.model, '--port', str(port), '--log-level', 'warning'])
    base = f'http://127.0.0.1:{port}'
    try:
        for _ in range(200):
            try: urllib.request.urlopen(base + '/ready', timeout=1); break
            except OSError: time.sleep(0.1)
        bodies = [json.dumps(r).encode() for r in rows]
        for b in bodies[:20]: post(base + '/predict', b)               # warm-up
        single = [post(base + '/predict', bodies[i % len(bodies)]) for i in range(a.requests)]
        t = time.perf_counter()
        with ThreadPoolExecutor(a.concurrency) as ex: conc = list(ex.map(lambda i: post(base + '/predict', bodies[i % len(bodies)]), range(a.requests)))
        rps = a.requests / (time.perf_counter() - t)
        big = json.dumps({'students': rows}).encode()
        batch = [post(base + '/predict/batch', big) for _ in range(a.batch_requests)]
    finally:
        proc.terminate(); proc.wait(10)

    src = work/'big.csv'
    pd.concat([students] * (a.rows // len(students) + 1)).head(a.rows).to_csv(src, sep=';', index=False)
    t = time.perf_counter(); counts = handoff.predict_file(a.model, src, work/'scored.csv', progress=False); batch_s = time.perf_counter() - t

    lines = [
        f"# API latency benchmark", "",
        f"Command: `python benchmarks/api_latency.py {' '.join(sys.argv[1:])}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}  ",
        f"Model: {art.card['model_name']} ({art.version}); one uvicorn worker on 127.0.0.1", "",
        "| measure | p50 ms | p99 ms | goal |", "|---|---|---|---|",
        f"| POST /predict, sequential ({a.requests} requests) | {pct(single, 50):.2f} | {pct(single, 99):.2f} | p50 < 5 ms |",
        f"| in-process predict_proba, 1 row | {pct(inproc1, 50):.2f} | {pct(inproc1, 99):.2f} | API p50 at most 2 ms above |",
        f"| POST /predict/batch, 1000 students ({a.batch_requests} requests) | {pct(batch, 50):.1f} | {pct(batch, 99):.1f} | |",
        f"| in-process predict_proba, 1000 rows | {pct(inproc1000, 50):.1f} | {pct(inproc1000, 99):.1f} | |", "",
        f"Throughput, {a.concurrency} concurrent clients: **{rps:.0f} requests/s** (goal >= 500; client and server share the 2 cores).  ",
        f"API overhead over in-process prediction (p50): **{pct(single, 50) - pct(inproc1, 50):.2f} ms** (goal <= 2 ms).  ",
        f"Batch scoring of {counts['rows_read']:,} rows with `predict_file`: **{batch_s:.1f} s** (goal < 10 s); "
        f"{counts['rows_scored']:,} scored, {counts['rows_quarantined']} quarantined.",
    ]
    text = '\n'.join(lines) + '\n'
    print(text)
    if a.out: Path(a.out).write_text(text)


if __name__ == '__main__': main()
