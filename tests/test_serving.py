"Serving at production grade: no 5xx from client input (property test), the compiled fast path's parity, explanations, logs, `serve` anywhere."
import json, logging, math, os, socket, subprocess, sys, time, urllib.request, urllib.error
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from studentperf import handoff
from studentperf.config import load_params, active_schema, active_target
from studentperf.data import synthetic_students, with_dtypes, add_target
from studentperf.features import setup_columns
from studentperf.fastpath import fast_predictor, explain, contributions, columns_of
from studentperf.modeling import candidate_pipeline, make_ensemble
from studentperf.serving import create_app

from conftest import STUDENT
JSON = {'content-type': 'application/json'}


@pytest.fixture(scope='module')
def app(tiny_run):
    return create_app(tiny_run/'models', max_batch=50, max_body_bytes=100_000)


@pytest.fixture(scope='module')
def client(app):
    with TestClient(app, raise_server_exceptions=False) as c: yield c


# ---------- no 5xx from client input ----------

@pytest.mark.parametrize('raw,field', [
    ('{"age": NaN}', 'age'), ('{"age": Infinity}', 'age'), ('{"age": -Infinity}', 'age'), ('{"age": 1e999}', 'age'),
])
def test_non_finite_numbers_are_422_naming_the_field(client, raw, field):
    body = json.dumps(STUDENT)[:-1] + ', ' + raw[1:]   # the student with the field replaced by a non-finite number
    body = body.replace('"age": 17, ', '')
    r = client.post('/predict', content=body, headers=JSON)
    assert r.status_code == 422, r.text
    assert [d['field'] for d in r.json()['detail']] == [field] and 'finite' in r.json()['detail'][0]['reason']
    assert r.json()['request_id'] == r.headers['x-request-id']


def test_python_json_nan_body_is_422(client):
    "What Python's json module writes for a NaN: `{\"age\": NaN}` as the issue reports it."
    r = client.post('/predict', content=json.dumps({'age': float('nan')}), headers=JSON)
    assert r.status_code == 422 and r.json()['detail'][0]['field'] == 'age'


@pytest.mark.parametrize('kw,status', [
    ({'json': {**STUDENT, 'absences': False}}, 422),              # strict: a boolean is not a number
    ({'json': {**STUDENT, 'age': True}}, 422),
    ({'json': {**STUDENT, 'age': 10**40}}, 422),                 # huge integers
    ({'content': ('{"age": ' + '9' * 5000 + '}').encode(), 'headers': JSON}, 422),
    ({'content': b'\xff\xfe{"age": 17}', 'headers': JSON}, 422),   # not UTF-8
    ({'content': '{"school": "GP"}'.encode('utf-16'), 'headers': JSON}, 422),
    ({'content': b'[' * 100_000 + b']' * 100_000, 'headers': JSON}, 413),   # bigger than max_body_bytes
    ({'content': b'[' * 20_000 + b']' * 20_000, 'headers': JSON}, 422),     # deep nesting
    ({'content': b'{"a":' * 3000 + b'1' + b'}' * 3000, 'headers': JSON}, 422),
    ({'content': b'{"age": 17', 'headers': JSON}, 422),
    ({'json': {**STUDENT, 'age': 17.0}}, 422),
    ({'json': {**STUDENT, 'Mjob': 'x' * 10_000}}, 422),
])
def test_hostile_bodies_get_4xx(client, kw, status):
    for url in ('/predict', '/predict/batch'):
        r = client.post(url, **kw)
        assert r.status_code == status, (url, r.status_code, r.text[:300])
        assert set(r.json()) == {'detail', 'request_id', 'model_version'}


def test_error_answers_echo_only_safe_inputs(client):
    r = client.post('/predict', json={**STUDENT, 'age': 10**40})
    assert r.status_code == 422 and r.json()['detail'][0]['field'] == 'age'
    r = client.post('/predict', content=('{"age": ' + '9' * 400 + '}').encode(), headers=JSON)   # beyond a float: echoed as nothing
    assert r.status_code == 422 and [d.get('input') for d in r.json()['detail'] if d['field'] == 'age'] == [None]
    r = client.post('/predict?explain=maybe', json=STUDENT)
    assert r.status_code == 422 and r.json()['detail'][0]['field'] == 'query.explain'


def test_property_no_5xx_and_responses_match_schema(app, client):
    "schemathesis generates requests from the OpenAPI schema (valid and invalid); none may give a 5xx or an undeclared shape."
    schemathesis = pytest.importorskip('schemathesis')
    from hypothesis import given, settings, HealthCheck, Phase
    from hypothesis.errors import Unsatisfiable
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance
    from schemathesis.checks import not_a_server_error
    schema = schemathesis.openapi.from_asgi('/openapi.json', app)
    n = int(os.environ.get('STUDENTPERF_PROPERTY_EXAMPLES', 15))
    ops = [r.ok() for r in schema.get_all_operations()]
    assert {f'{o.method.upper()} {o.path}' for o in ops} >= {'POST /predict', 'POST /predict/batch', 'GET /model'}
    for op in ops:
        for negative, strategy in ((False, op.as_strategy()), (True, op.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE))):
            @given(case=strategy)
            @settings(max_examples=n, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck), database=None)
            def run(case):
                case.call_and_validate(checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
                                       excluded_checks=None)
            try: run()
            except Unsatisfiable:
                if not negative: raise   # an operation without inputs (GET /health) has no invalid request


# ---------- logs ----------

def test_unhandled_error_is_logged_with_traceback_and_request_id(app, client, caplog, monkeypatch):
    def boom(rows): raise RuntimeError('model exploded')
    monkeypatch.setattr(app.state.fast, 'proba', boom)
    with caplog.at_level(logging.INFO, logger='studentperf'):
        r = client.post('/predict', json=STUDENT, headers={'X-Request-ID': 'req-42'})
    assert r.status_code == 500 and r.json()['request_id'] == 'req-42' and r.headers['x-request-id'] == 'req-42'
    assert 'model exploded' not in r.text and 'Traceback' not in r.text   # nothing leaks to the client
    err = [x for x in caplog.records if x.levelno == logging.ERROR]
    assert err and 'req-42' in err[0].getMessage() and err[0].exc_info and 'model exploded' in caplog.text
    assert 'Traceback' in caplog.text
    access = [x.getMessage() for x in caplog.records if x.name == 'studentperf.serving.access']
    assert any(a.startswith('POST /predict 500 ') and 'request_id=req-42' in a and 'model_version=' in a for a in access), access


def test_access_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger='studentperf.serving.access'):
        r = client.post('/predict', json=STUDENT)
        client.get('/health')
    lines = [x.getMessage() for x in caplog.records if x.name == 'studentperf.serving.access']
    assert len(lines) == 2 and lines[0].startswith('POST /predict 200 ') and 'ms request_id=' + r.json()['request_id'] in lines[0]
    assert f"model_version={r.json()['model_version']}" in lines[0]


# ---------- fast path ----------

def test_request_path_builds_no_pandas_frame(client, monkeypatch):
    def no_frame(*a, **k): raise AssertionError('a pandas DataFrame was built on the request path')
    monkeypatch.setattr(pd, 'DataFrame', no_frame)
    assert client.post('/predict', json=STUDENT).status_code == 200
    assert client.post('/predict?explain=true', json=STUDENT).status_code == 200
    assert client.post('/predict/batch', json={'students': [STUDENT] * 3}).status_code == 200


def test_model_says_which_path_serves(client):
    assert client.get('/model').json()['serving_path'] == 'numpy logreg'


@pytest.fixture(scope='module')
def kinds():
    "One tiny fitted model of every candidate kind and both ensembles (300 generated students; seconds)."
    p = load_params(overrides={'run.quick': True})
    sch = {c: active_schema(p)[c] for c in setup_columns(p)}
    d = add_target(synthetic_students(300, seed=1), active_target(p))
    X, y = with_dtypes(d[list(sch)], sch), d['pass']
    small = {'forest': {'clf__n_estimators': 15}, 'hgb': {'clf__max_iter': 10}}
    models = {k: candidate_pipeline(k, p).set_params(**small.get(k, {})).fit(X, y) for k in ['logreg', 'knn', 'tree', 'forest', 'svm', 'hgb']}
    mem = {k: candidate_pipeline(k, p) for k in ('logreg', 'tree')}
    for e in ('voting', 'stacking'): models[e] = make_ensemble(e, mem, p).fit(X, y)
    return models, sch, p


def test_parity_with_the_skops_pipeline_on_10000_students(kinds):
    models, sch, p = kinds
    big = with_dtypes(synthetic_students(10_000, seed=7)[list(sch)], sch)
    rows = big.astype(object).to_dict('records')
    for k, m in models.items():
        fp = fast_predictor(m, sch)
        assert fp.path != 'scikit-learn', k
        ref, got = m.predict_proba(big)[:, 1], fp.proba(rows)
        assert np.abs(ref - got).max() <= 1e-6, (k, np.abs(ref - got).max())
    assert fast_predictor(models['logreg'], sch).path == 'numpy logreg'


def test_fallback_for_an_unknown_step(kinds):
    from sklearn.preprocessing import FunctionTransformer
    models, sch, p = kinds
    m = candidate_pipeline('logreg', p); m.steps.insert(3, ('odd', FunctionTransformer()))
    d = add_target(synthetic_students(200, seed=3), active_target(p))
    X = with_dtypes(d[list(sch)], sch)
    fp = fast_predictor(m.fit(X, d['pass']), sch)
    assert fp.path == 'scikit-learn'
    np.testing.assert_allclose(fp.proba(X.head(5).astype(object).to_dict('records')), m.predict_proba(X.head(5))[:, 1])


# ---------- explanations ----------

def test_linear_contributions_sum_to_the_logit(kinds):
    models, sch, p = kinds
    fp = fast_predictor(models['logreg'], sch)
    rows = with_dtypes(synthetic_students(200, seed=11)[list(sch)], sch).astype(object).to_dict('records')
    con, base = contributions(fp, columns_of(rows, fp.columns, fp.categorical))
    pp = fp.proba(rows)
    np.testing.assert_allclose(base + sum(con.values()), np.log((1 - pp) / pp), atol=1e-9)
    e = explain(fp, rows[:1], top=100)[0]
    assert e['method'].startswith('exact')
    total = sum(f['effect'] for f in e['raises_risk'] + e['lowers_risk'])
    assert abs(base + total - np.log((1 - pp[0]) / pp[0])) < 1e-3   # effects are rounded to 4 decimals


def test_tree_explanation_sign_of_failures(kinds):
    "In generated data past failures lower the grade: for students with failures, the tree's explanation says they raise risk."
    _, sch, p = kinds
    d = add_target(synthetic_students(2000, seed=5), active_target(p))
    X = with_dtypes(d[list(sch)], sch)
    tree = candidate_pipeline('tree', p).set_params(clf__max_depth=4, clf__min_samples_leaf=20).fit(X, d['pass'])
    fp = fast_predictor(tree, sch)
    rows = X[X['failures'] >= 2].head(40).astype(object).to_dict('records')
    ex = explain(fp, rows, top=100)
    eff = [next((f['effect'] for f in e['raises_risk'] + e['lowers_risk'] if f['factor'] == 'failures'), 0.0) for e in ex]
    assert ex[0]['method'].startswith('local') and np.mean(eff) > 0 and min(eff) >= 0, eff
    assert any(f['text'].startswith(f"failures = {r['failures']}: raises risk") for e, r in zip(ex, rows) for f in e['raises_risk'])


def test_ensemble_explanations_use_the_local_method(kinds):
    models, sch, p = kinds
    rows = with_dtypes(synthetic_students(5, seed=2)[list(sch)], sch).astype(object).to_dict('records')
    for k in ('voting', 'stacking'):
        e = explain(fast_predictor(models[k], sch), rows)
        assert len(e) == 5 and e[0]['method'].startswith('local') and e[0]['raises_risk'] + e[0]['lowers_risk'], k


def test_predict_explain_endpoint(client):
    r = client.post('/predict?explain=true', json={**STUDENT, 'failures': 3, 'absences': 30})
    assert r.status_code == 200
    e = r.json()['explanation']
    assert e['raises_risk'] and all(f['effect'] > 0 and f['text'].endswith('raises risk') for f in e['raises_risk'])
    assert client.post('/predict', json=STUDENT).json().get('explanation') is None


# ---------- CLI ----------

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def test_serve_from_a_temporary_directory(tiny_run, tmp_path):
    "No params.yaml in the working directory: the model card, flags and env vars are enough."
    port, cli = free_port(), str(Path(sys.executable).parent/'studentperf')
    env = {k: v for k, v in os.environ.items() if not k.startswith('STUDENTPERF_')}
    proc = subprocess.Popen([cli, 'serve', '--model', str(tiny_run/'models'), '--port', str(port), '--workers', '1', '--max-batch', '3'],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f'http://127.0.0.1:{port}'
    try:
        for _ in range(160):
            try:
                with urllib.request.urlopen(base + '/ready', timeout=1) as r:
                    if r.status == 200: break
            except (urllib.error.URLError, ConnectionError, OSError): time.sleep(0.25)
        else: pytest.fail(('server exited: ' + proc.stdout.read1().decode(errors='replace')) if proc.poll() is not None else 'not ready after 40 s')
        req = urllib.request.Request(base + '/predict/batch', data=json.dumps({'students': [STUDENT] * 4}).encode(), headers=JSON)
        with pytest.raises(urllib.error.HTTPError) as e: urllib.request.urlopen(req, timeout=5)
        assert e.value.code == 413   # --max-batch reached the worker
        req = urllib.request.Request(base + '/predict', data=json.dumps(STUDENT).encode(), headers=JSON)
        with urllib.request.urlopen(req, timeout=5) as r: assert r.status == 200
    finally:
        proc.terminate(); out = proc.communicate(timeout=15)[0].decode(errors='replace')
    assert 'POST /predict 200' in out and 'request_id=' in out, out[-2000:]   # our access lines reach the log


def test_predict_cli_explain(tiny_run, tmp_path):
    src = tmp_path/'in.csv'
    pd.DataFrame([STUDENT, {**STUDENT, 'failures': 3, 'absences': 30}]).to_csv(src, sep=';', index=False)
    cli = str(Path(sys.executable).parent/'studentperf')
    r = subprocess.run([cli, 'predict', str(src), '-o', str(tmp_path/'out.csv'), '--model', str(tiny_run/'models'), '--explain'],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = pd.read_csv(tmp_path/'out.csv', keep_default_na=False)
    assert len(out) == 2 and 'explained 2 rows' in r.stdout
    assert 'raises risk' in out.loc[1, 'raises_risk'] and 'failures = 3' in out.loc[1, 'raises_risk'] + out.loc[1, 'lowers_risk']


# ---------- the prediction log and Prometheus metrics (issue 11) ----------

from prometheus_client.parser import text_string_to_metric_families
from studentperf import monitoring
from studentperf.runner import main


def test_api_predictions_land_in_the_log_with_the_returned_id(tiny_run, tmp_path):
    url = f"sqlite:///{tmp_path/'log.sqlite'}"
    plog = monitoring.PredictionLog(url)
    with TestClient(create_app(tiny_run/'models', prediction_log=plog)) as c:
        one = c.post('/predict', json={**STUDENT, 'student_ref': 'S-1'}).json()
        many = c.post('/predict/batch', json={'students': [STUDENT, {**STUDENT, 'absences': 30, 'student_ref': 'S-3'}]}).json()
        assert c.post('/predict', json={**STUDENT, 'teacher': 'x'}).status_code == 422   # no other extra field is allowed
        assert c.post('/predict', json={**STUDENT, 'student_ref': 7}).status_code == 422
        assert c.get('/ready').json()['warnings'] == []
    assert plog.flush()
    logged = monitoring.predictions_frame(url).set_index('prediction_id')
    ids = [one['prediction_id'], *(p['prediction_id'] for p in many['predictions'])]
    assert sorted(logged.index) == sorted(ids) and len(set(ids)) == 3
    assert one['student_ref'] == 'S-1' and logged.loc[one['prediction_id'], 'student_ref'] == 'S-1'
    assert pd.isna(logged.loc[ids[1], 'student_ref']) and logged.loc[ids[2], 'student_ref'] == 'S-3'
    assert abs(logged.loc[ids[0], 'p_pass'] - one['probability_pass']) < 1e-12 and logged.loc[ids[2], 'absences'] == 30
    assert set(logged['source']) == {'api'}
    plog.close()


def test_a_failing_store_never_fails_a_prediction(tiny_run):
    class Broken(monitoring.PredictionLog):
        def _run(self):   # the writer thread fails every batch, as a store that is down would
            while True:
                batch = self._take()
                if not batch and self._stop: return
                if batch: self._fail(len(batch), OSError('store is down'))
                with self._cv: self._busy = 0; self._cv.notify_all()
    plog = Broken('sqlite://')
    before = monitoring.PROM_METRICS['log_errors']._value.get()
    with TestClient(create_app(tiny_run/'models', prediction_log=plog)) as c:
        r = c.post('/predict', json=STUDENT)
        assert r.status_code == 200 and r.json()['prediction_id']
        plog.flush()
        ready = c.get('/ready').json()
        assert ready['status'] == 'ready' and any('could not be written' in w for w in ready['warnings'])
        fams = {f.name: f for f in text_string_to_metric_families(c.get('/metrics').text)}
    assert plog.errors == 1 and monitoring.PROM_METRICS['log_errors']._value.get() == before + 1
    assert fams['studentperf_prediction_log_errors']
    plog.close()


def test_metrics_are_prometheus_text(client):
    client.post('/predict', json=STUDENT)
    r = client.get('/metrics')
    assert r.status_code == 200 and r.headers['content-type'].startswith('text/plain')
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert {'http_requests', 'http_request_duration_seconds', 'studentperf_predictions', 'studentperf_model_info'} <= set(fams)
    served = [s for s in fams['http_requests'].samples if s.labels.get('path') == '/predict' and s.labels.get('status') == '200']
    assert served and served[0].value >= 1
    assert [s.labels['version'] for s in fams['studentperf_model_info'].samples if s.value == 1] == [client.get('/model').json()['model_version']]


def test_batch_cli_records_every_row_with_its_id(tiny_run, tmp_path, capsys):
    rows = synthetic_students(30, seed=5).drop(columns=['G1', 'G2', 'G3'], errors='ignore')
    rows.insert(0, 'student_ref', [f'R{i}' for i in range(len(rows))])
    rows.loc[3, 'age'] = 99   # invalid: quarantined, not logged
    rows.to_csv(tmp_path/'class.csv', sep=';', index=False)
    url = f"sqlite:///{tmp_path/'log.sqlite'}"
    assert main(['predict', str(tmp_path/'class.csv'), '-o', str(tmp_path/'scored.csv'), '--model', str(tiny_run/'models'), '--store', url]) == 0
    scored = pd.read_csv(tmp_path/'scored.csv')
    assert len(scored) == 29 and scored.columns[0] == 'prediction_id' and scored['prediction_id'].is_unique
    logged = monitoring.predictions_frame(url).set_index('prediction_id')
    assert sorted(logged.index) == sorted(scored['prediction_id']) and set(logged['source']) == {'batch'}
    assert (logged.loc[scored['prediction_id'], 'student_ref'].values == scored['student_ref'].values).all()
    assert 'recorded 29 predictions' in capsys.readouterr().out


# ---------- access control, as `serve` and the container wire it (issue 16) ----------

from studentperf import auth
from studentperf.serving import app_from_env


def test_server_app_requires_keys_once_they_exist_and_logs_the_key_id(tiny_run, tmp_path, monkeypatch):
    ks = auth.KeyStore(tmp_path/'keys.json', scrypt_n=2**10)
    key, rec = ks.create('sis', ['predict'])
    url = f"sqlite:///{tmp_path/'log.sqlite'}"
    for k, v in {'STUDENTPERF_MODEL': str(tiny_run/'models'), 'STUDENTPERF_KEYS': str(tmp_path/'keys.json'),
                 'STUDENTPERF_HOST': '127.0.0.1', 'STUDENTPERF_MONITORING_STORE': url}.items(): monkeypatch.setenv(k, v)
    with TestClient(app_from_env()) as c:
        assert c.get('/ready').status_code == 200                       # open for load balancers
        r = c.post('/predict', json=STUDENT)
        assert r.status_code == 401 and r.headers['www-authenticate'].startswith('Bearer')
        assert c.get('/metrics', headers={'Authorization': f'Bearer {key}'}).status_code == 403   # needs `monitor`
        ok = c.post('/predict', json=STUDENT, headers={'Authorization': f'Bearer {key}'})
        assert ok.status_code == 200
        assert 'apiKey' in c.get('/openapi.json').json()['components']['securitySchemes']
    logged = monitoring.predictions_frame(url).set_index('prediction_id')
    assert logged.loc[ok.json()['prediction_id'], 'key_id'] == rec['id']
    assert key not in (tmp_path/'keys.json').read_text()


def test_serve_refuses_a_network_address_without_keys(tiny_run, tmp_path, capsys):
    args = ['serve', '--model', str(tiny_run/'models'), '--host', '0.0.0.0', '--keys', str(tmp_path/'none.json')]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert 'refusing to serve on 0.0.0.0 without API keys' in err and '--insecure-no-auth' in err
