"""Cost of authentication on POST /predict (issue 16). Not a test: it prints numbers to compare with the goal.

Goal: API-key checking adds less than 0.2 ms at p50 to a /predict request.

Measures (1) the auth middleware alone, awaited directly around a no-op ASGI app, with a verified (cached) key;
(2) the first verification of a key (scrypt, default cost); (3) the whole in-process stack (Starlette TestClient) on an
app whose /predict answers a constant, with and without `secure_app`, requests interleaved so that load changes hit
both sides alike. The model's own prediction time (tens of ms, see api_latency.md) is left out on purpose: it would
drown a 0.2 ms difference in noise on a shared machine.

(4) with --real: the same comparison on the real app (`serving.create_app`) with a quick logistic-regression model
trained on the demo data into a temporary folder (or --model PATH), POST /predict with one valid student.

usage: python benchmarks/auth_cost.py [--n 20000] [--requests 2000] [--real] [--model PATH] [--out benchmarks/results/auth_cost.md]
"""
import argparse, asyncio, os, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from studentperf import auth


def pct(xs, q): return float(np.percentile(xs, q)) * 1e3


def app():
    a = FastAPI()
    @a.post('/predict')
    def predict(): return {'probability_pass': 0.5}
    return a


def real_app(ks, key, a):
    "Interleaved /predict timings on the real app, without and with the key check: ((plain, auth), model description)."
    from studentperf.config import load_params
    from studentperf.serving import create_app
    TINY = {'run.quick': True, 'model.candidates': ['logreg'], 'model.ensembles': [], 'model.imbalance': ['none']}
    params = load_params(overrides=TINY)
    with tempfile.TemporaryDirectory() as d:
        model = a.model
        if not model:
            from studentperf.data import run_prepare
            from studentperf.modeling import run_model
            from studentperf.evaluation import run_evaluate
            from studentperf.handoff import run_handoff
            run_prepare(params, Path(d)); run_model(params, Path(d), progress=False); run_evaluate(params, Path(d)); run_handoff(params, Path(d))
            model = Path(d)/'models'
        plain_app, sec_app = create_app(model, params), create_app(model, params)
        auth.protect(sec_app, '127.0.0.1', params={**params, 'auth': {'requests_per_minute': 10**9}}, keystore=ks)
        with TestClient(plain_app) as plain, TestClient(sec_app) as sec:
            card = plain.get('/model').json()
            one = {c: (s['values'][0] if 'values' in s else s.get('min', 0)) for c, s in card['input_schema'].items()}
            h = {'Authorization': f'Bearer {key}'}
            for _ in range(20): plain.post('/predict', json=one); sec.post('/predict', json=one, headers=h)
            tp, ta = [], []
            for _ in range(min(a.requests, 1000)):
                t0 = time.perf_counter(); plain.post('/predict', json=one); tp.append(time.perf_counter() - t0)
                t0 = time.perf_counter(); r = sec.post('/predict', json=one, headers=h); ta.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
        return (tp, ta), f"{card['model_params'].get('classifier', 'model') if isinstance(card.get('model_params'), dict) else 'model'} {card['model_version']}, serving path {card.get('serving_path')}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=20000); ap.add_argument('--requests', type=int, default=2000); ap.add_argument('--out')
    ap.add_argument('--real', action='store_true'); ap.add_argument('--model')
    a = ap.parse_args()
    load0 = subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as d:
        ks = auth.KeyStore(Path(d)/'keys.json')
        key, _ = ks.create('bench', ['predict'])
        async def noop(scope, receive, send): pass
        mw = auth.AuthMiddleware(noop, ks, auth.RateLimiter(10**9))
        hdr = [(b'authorization', f'Bearer {key}'.encode())]
        async def direct(n):
            t0 = time.perf_counter(); await mw({'type': 'http', 'method': 'POST', 'path': '/predict', 'headers': hdr}, None, None)
            first = time.perf_counter() - t0
            ts = []
            for _ in range(n):
                s = {'type': 'http', 'method': 'POST', 'path': '/predict', 'headers': hdr}
                t0 = time.perf_counter(); await mw(s, None, None); ts.append(time.perf_counter() - t0)
            return first, ts
        first, ts = asyncio.run(direct(a.n))
        plain_t, auth_t = [], []
        with TestClient(app()) as plain, TestClient(auth.secure_app(app(), ks, requests_per_minute=10**9)) as sec:
            h = {'Authorization': f'Bearer {key}'}
            for _ in range(50): plain.post('/predict'); sec.post('/predict', headers=h)   # warm up
            for _ in range(a.requests):
                t0 = time.perf_counter(); plain.post('/predict', headers=h); plain_t.append(time.perf_counter() - t0)
                t0 = time.perf_counter(); sec.post('/predict', headers=h); auth_t.append(time.perf_counter() - t0)
        real = real_app(ks, key, a) if (a.real or a.model) else None
    load1 = subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()
    diff = pct(auth_t, 50) - pct(plain_t, 50)
    lines = ['# Cost of authentication on /predict', '',
             f'Command: `python benchmarks/auth_cost.py{" --n " + str(a.n) if a.n != 20000 else ""}{" --requests " + str(a.requests) if a.requests != 2000 else ""}{" --real" if a.real else ""} --out benchmarks/results/auth_cost.md`  ',
             f'Machine: {os.cpu_count()} cores (shared), {platform.platform()}, Python {platform.python_version()}  ',
             f'Load: before `{load0}`; after `{load1}`', '',
             '| measure | p50 ms | p99 ms | goal |', '|---|---|---|---|',
             f'| auth middleware alone, cached key ({a.n} calls) | {pct(ts, 50):.4f} | {pct(ts, 99):.4f} | p50 < 0.2 ms |',
             f'| POST /predict (constant answer), no auth ({a.requests} requests) | {pct(plain_t, 50):.3f} | {pct(plain_t, 99):.3f} | |',
             f'| POST /predict (constant answer), with `secure_app` ({a.requests} requests) | {pct(auth_t, 50):.3f} | {pct(auth_t, 99):.3f} | |',
             '', f'Whole-stack difference at p50: **{diff:+.3f} ms** (goal < 0.2 ms).  ',
             f'First request with a new key (scrypt n=2^14, once per key per server process): **{first*1e3:.1f} ms**, in a worker thread.']
    if real:
        (rp, ra), model = real
        lines[11:11] = [f'| real app POST /predict ({model}), no auth ({len(rp)} requests) | {pct(rp, 50):.3f} | {pct(rp, 99):.3f} | |',
                      f'| real app POST /predict, `protect` with keys ({len(ra)} requests) | {pct(ra, 50):.3f} | {pct(ra, 99):.3f} | |']
        lines.append(f'Real app difference at p50: **{pct(ra, 50) - pct(rp, 50):+.3f} ms** (noise of the model itself included).')
    text = '\n'.join(lines) + '\n'
    print(text)
    if a.out: Path(a.out).write_text(text)


if __name__ == '__main__':
    main()
