"Drift, alerts and the retraining gate end to end: the CLI on a tiny trained model, a real local webhook server."
import json, os, socket, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
import numpy as np
import pandas as pd
import pytest
from studentperf import drift, handoff
from studentperf.config import load_params
from studentperf.runner import main


@pytest.fixture(scope='module')
def window(tiny_run, tmp_path_factory):
    "Scored request windows of the simulated scenarios: {scenario: (scored csv, outcomes csv)}."
    d = tmp_path_factory.mktemp('windows')
    out = {}
    for sc, seed in (('none', 3), ('covariate', 3)):
        req, oc = drift.simulate_stream(sc, 300, seed=seed)
        req.to_csv(d/f'{sc}.csv', index=False); oc.to_csv(d/f'{sc}.outcomes.csv', index=False)
        handoff.predict_file(tiny_run/'models', d/f'{sc}.csv', d/f'{sc}.scored.csv', progress=False)
        out[sc] = (d/f'{sc}.scored.csv', d/f'{sc}.outcomes.csv')
    return out


@pytest.fixture
def hook():
    "A webhook receiver on a free loopback port: (url, list of received JSON bodies)."
    got = []
    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers['content-length']))))
            self.send_response(204); self.end_headers()
        def log_message(self, *a): pass
    srv = HTTPServer(('127.0.0.1', 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
    yield f'http://127.0.0.1:{srv.server_address[1]}/alerts', got
    srv.shutdown(); srv.server_close()


def _reference(tiny_run):
    art = handoff.load_artifact(tiny_run/'models')
    return art, drift.load_reference(art.path)


def test_no_drift_on_same_distribution(tiny_run, window):
    art, ref = _reference(tiny_run)
    w = drift.read_window(window['none'][0])
    rep = drift.window_drift(load_params(), art, w, ref)
    assert rep['verdict'] == 'no drift' and not rep['dataset_drift'] and rep['share_drifted'] < 0.2


def test_drift_on_shifted_window(tiny_run, window):
    art, ref = _reference(tiny_run)
    rep = drift.window_drift(load_params(), art, drift.read_window(window['covariate'][0]), ref)
    assert {'absences', 'failures'} <= set(rep['drifted_columns'])
    assert rep['prediction_drift'] and rep['predictions']['flagged_share'] > rep['predictions']['reference_flagged_share']
    strong = drift.drift_report(ref, drift.simulate_stream('covariate', 300, 1)[0].assign(
        **{c: 'MS' for c in ['school']}, sex='M', address='R', higher='no', internet='no', romantic='yes', paid='yes',
        schoolsup='yes', famsup='no', activities='no', nursery='no', famsize='LE3', Pstatus='A', Mjob='health', Fjob='health',
        reason='other', guardian='other', Medu=0, Fedu=0, Dalc=5, Walc=5))
    assert strong['dataset_drift'] and strong['verdict'].startswith('dataset drift')


def test_small_window_too_few_rows(tiny_run, window, tmp_path):
    w = pd.read_csv(window['covariate'][0]).head(40).drop(columns=['requested_at'])
    w.to_csv(tmp_path/'small.csv', index=False)
    assert main(['monitor', 'drift', '--window', str(tmp_path/'small.csv'), '--models', str(tiny_run/'models'), '--out', str(tmp_path)]) == 0
    rep = json.loads((tmp_path/'monitoring'/'drift.json').read_text())
    assert rep['verdict'] == drift.TOO_FEW and not rep['dataset_drift'] and rep['columns'] == {}
    # nothing fires on it either (no time column: no "no predictions" rule)
    assert main(['monitor', 'check', '--window', str(tmp_path/'small.csv'), '--models', str(tiny_run/'models'), '--out', str(tmp_path)]) == 0


def test_check_posts_alerts_and_exit_codes(tiny_run, window, hook, tmp_path, capsys):
    url, got = hook
    models = str(tiny_run/'models')
    quiet = pd.read_csv(window['none'][0]).drop(columns=['requested_at'])
    quiet.to_csv(tmp_path/'quiet.csv', index=False)
    args = ['--models', models, '--out', str(tmp_path), '--webhook', url, '--no-action']
    assert main(['monitor', 'check', '--window', str(tmp_path/'quiet.csv'), *args]) == 0
    assert got == [] and not (tmp_path/'monitoring'/'alerts.jsonl').exists()
    assert main(['monitor', 'check', '--window', str(window['covariate'][0]), *args]) == 1
    rules = {a['rule'] for a in got}
    assert 'prediction_drift' in rules and all(a['model_version'] == handoff.load_artifact(models).version for a in got)
    recs = drift.read_alerts(tmp_path/'monitoring'/'alerts.jsonl')
    assert len(recs) == len(got) and all(r['sent'] and r['webhook'] for r in recs)
    n = len(got)   # same alerts again: recorded, not resent (cool-down), still exit 1
    assert main(['monitor', 'check', '--window', str(window['covariate'][0]), *args]) == 1
    assert len(got) == n and len(drift.read_alerts(tmp_path/'monitoring'/'alerts.jsonl')) == 2 * n
    assert main(['monitor', 'check', '--window', str(tmp_path/'missing.csv'), *args]) == 2
    assert 'not found' in capsys.readouterr().err


def test_webhook_down_is_logged_not_fatal(tmp_path):
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    assert drift.post_json(f'http://127.0.0.1:{port}/x', {'a': 1}, timeout=1, retries=1, backoff=0.01) is False


def test_performance_degrades_on_concept_drift(tiny_run, tmp_path):
    art, _ = _reference(tiny_run)
    req, oc = drift.simulate_stream('concept', 300, seed=4)
    p = handoff.score(art, handoff.model_input(req, art))['probability_pass']
    rep = drift.performance_report(oc['pass'].to_numpy()[:150], p.to_numpy()[:150], art.threshold, art.card, 0.05, 100, n_boot=200)
    assert rep['degraded'] and 'roc_auc' in rep['degraded_metrics']
    req0, oc0 = drift.simulate_stream('none', 300, seed=4)
    p0 = handoff.score(art, handoff.model_input(req0, art))['probability_pass']
    rep0 = drift.performance_report(oc0['pass'].to_numpy()[:150], p0.to_numpy()[:150], art.threshold, art.card, 0.05, 100, n_boot=200)
    assert not rep0['metrics']['roc_auc']['degraded']


def test_gate_promotes_better_keeps_worse():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 300)
    good = np.clip(np.where(y == 1, .8, .3) + rng.normal(0, .15, 300), .01, .99)
    poor = np.clip(np.where(y == 1, .6, .45) + rng.normal(0, .25, 300), .01, .99)
    rule = load_params()['monitoring']['promotion']
    up, down = drift.promotion_decision(y, poor, good, rule), drift.promotion_decision(y, good, poor, rule)
    assert up['promote'] and not down['promote']
    assert up['challenger']['roc_auc'] > up['champion']['roc_auc'] and 'not met' in down['reason']
    # calibration bound: a challenger that ranks better but is badly calibrated stays out
    squashed = 0.69 + good * 0.3   # same ranking as `good`, but everyone looks likely to pass
    assert not drift.promotion_decision(y, poor, squashed, {**rule, 'margin': 0.0})['promote']


def test_simulate_cli(tmp_path):
    assert main(['monitor', 'simulate', '--scenario', 'covariate', '--n', '50', '--seed', '2', '--out', str(tmp_path)]) == 0
    req, oc = pd.read_csv(tmp_path/'requests.csv'), pd.read_csv(tmp_path/'outcomes.csv')
    assert len(req) == len(oc) == 50 and set(req['student_ref']) == set(oc['student_ref'])


@pytest.mark.slow
def test_retrain_end_to_end(tiny_run, tmp_path):
    import shutil
    from conftest import TINY
    models = tmp_path/'models'
    shutil.copytree(tiny_run/'models', models)
    champion = handoff.load_artifact(models).version
    req, oc = drift.simulate_stream('concept', 600, seed=5)
    w = drift.join_outcomes(req, oc)
    w.to_csv(tmp_path/'labelled.csv', index=False)
    w.assign(probability_pass=0.5).to_csv(tmp_path/'labelled.csv', index=False)
    args = ['retrain', '--window', str(tmp_path/'labelled.csv'), '--models', str(models), '--out', str(tmp_path)]
    for k, v in TINY.items(): args += ['--set', f'{k}={json.dumps(v)}']
    assert main(args) == 0
    hist = [json.loads(l) for l in (models/'history.jsonl').read_text().splitlines()]
    assert hist[-1]['champion'] == champion and hist[-1]['gate_rows'] == 200
    prod = json.loads((models/'production.json').read_text())['model_version']
    assert prod == (hist[-1]['challenger'] if hist[-1]['promote'] else champion)


def test_log_failures_from_metrics_and_time_window(tmp_path):
    class M(BaseHTTPRequestHandler):
        def do_GET(self):
            body = (b'# HELP studentperf_prediction_log_errors_total Rows the prediction log could not write\n'
                    b'# TYPE studentperf_prediction_log_errors_total counter\nstudentperf_prediction_log_errors_total 3.0\n')
            self.send_response(200); self.send_header('content-type', 'text/plain; version=0.0.4'); self.end_headers(); self.wfile.write(body)
        def log_message(self, *a): pass
    srv = HTTPServer(('127.0.0.1', 0), M)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try: assert drift.log_errors(f'http://127.0.0.1:{srv.server_address[1]}/metrics') == 3
    finally: srv.shutdown(); srv.server_close()
    req, _ = drift.simulate_stream('none', 48, seed=1)   # one request an hour or so from 2026-01-05
    req.assign(probability_pass=0.8).to_csv(tmp_path/'w.csv', index=False)
    assert 0 < len(drift.read_window(tmp_path/'w.csv', since='2026-01-06')) < 48
    req.drop(columns='requested_at').assign(probability_pass=0.8).to_csv(tmp_path/'nt.csv', index=False)
    with pytest.raises(ValueError, match='time column'): drift.read_window(tmp_path/'nt.csv', since='2026-01-06')
    req.assign(probability_pass=1.5).to_csv(tmp_path/'bad.csv', index=False)
    with pytest.raises(ValueError, match='probability_pass'): drift.read_window(tmp_path/'bad.csv')


def test_check_reads_the_prediction_log(tiny_run, tmp_path):
    "The window comes from the store that the API and `predict` write (08_monitoring), not only from a CSV."
    from studentperf import monitoring
    art = handoff.load_artifact(tiny_run/'models')
    req, _ = drift.simulate_stream('covariate', 200, seed=8)
    X = handoff.model_input(req, art)
    url = f"sqlite:///{tmp_path/'predictions.sqlite'}"
    plog = monitoring.PredictionLog(url)
    plog.record(X, handoff.score(art, X), art.version, art.threshold, list(req['student_ref']))
    assert plog.close() and plog.written == 200
    w = drift.store_window(url, model_version=art.version)
    assert len(w) == 200 and w['probability_pass'].between(0, 1).all() and 'time' in w
    assert main(['monitor', 'check', '--store', url, '--models', str(tiny_run/'models'), '--out', str(tmp_path), '--no-action']) == 1
    assert 'prediction_drift' in {a['rule'] for a in drift.read_alerts(tmp_path/'monitoring'/'alerts.jsonl')}


@pytest.mark.slow
def test_monitor_report(tiny_run, window, tmp_path):
    args = ['monitor', 'report', '--window', str(window['covariate'][0]), '--outcomes', str(window['covariate'][1]),
            '--models', str(tiny_run/'models'), '--out', str(tmp_path)]
    assert main(args) == 0
    html = (tmp_path/'reports'/'09_drift.html').read_text()
    assert 'absences' in html and 'prediction_drift' in html
