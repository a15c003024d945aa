"Handoff: the artifact, its card, the prediction API (TestClient and a real uvicorn process), batch scoring."
import json, shutil, socket, subprocess, sys, time, urllib.request, urllib.error
from pathlib import Path
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from studentperf import handoff, data
from studentperf.config import load_params
from studentperf.modeling import load_model
from studentperf.serving import create_app
from conftest import TINY

from conftest import STUDENT


@pytest.fixture(scope='module')
def client(tiny_run):
    with TestClient(create_app(tiny_run/'models', load_params(overrides={**TINY, 'handoff.max_batch': 50}))) as c: yield c


def test_artifact_round_trip_and_card(tiny_run):
    art = handoff.load_artifact(tiny_run/'models')
    X, y = handoff.holdout_rows(tiny_run, load_params(overrides=TINY))
    pd.testing.assert_frame_equal(pd.DataFrame(art.model.predict_proba(X)), pd.DataFrame(load_model(tiny_run/'models'/'model.skops').predict_proba(X)))
    card = json.loads((art.path/'model_card.json').read_text())
    for k in ('model_version', 'created', 'git_commit', 'training_data', 'setup', 'model_params', 'input_schema', 'metrics',
              'risk_threshold', 'intended_use', 'limits'):
        assert k in card, k
    assert card['training_data']['sha256'] == data.file_sha256(tiny_run/'data'/'student_performance_cleaned.csv')
    assert card['training_data']['rows_train'] + card['training_data']['rows_test'] == card['training_data']['rows']
    assert 'G1' not in card['input_schema'] and card['setup'] == 'C'
    assert card['metrics']['cv']['roc_auc'] > 0.5 and 'roc_auc' in card['metrics']['holdout']
    assert (art.path/'model_card.md').read_text().startswith('# Model card')
    assert (tiny_run/'reports'/'interpretation.md').exists() and (tiny_run/'reports'/'interpretation_importance.png').exists()


def test_untrusted_type_is_refused(tiny_run, tmp_path):
    "A model holding a type that is not on the reviewed allow-list is not loaded."
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.pipeline import make_pipeline
    art = handoff.load_artifact(tiny_run/'models')
    evil = make_pipeline(FunctionTransformer(shutil.rmtree), art.model)   # a function no one reviewed
    handoff.write_artifact(evil, {**art.card, 'model_version': 'evil'}, tmp_path)
    with pytest.raises(handoff.ArtifactError, match='shutil.rmtree'): handoff.load_artifact(tmp_path/'evil')


def test_endpoints_happy_path(client):
    r = client.post('/predict', json=STUDENT)
    assert r.status_code == 200 and set(r.json()) == {'probability_pass', 'at_risk', 'risk_band', 'model_version', 'request_id', 'prediction_id', 'student_ref'}
    assert 0 <= r.json()['probability_pass'] <= 1 and r.headers['x-request-id'] == r.json()['request_id']
    assert client.get('/health').json() == {'status': 'ok'}
    assert client.get('/ready').status_code == 200
    card = client.get('/model').json()
    assert card['model_version'] == r.json()['model_version'] == r.headers['x-model-version']
    b = client.post('/predict/batch', json={'students': [STUDENT, {**STUDENT, 'failures': 3, 'higher': 'no'}]})
    assert b.status_code == 200 and b.json()['count'] == 2
    assert client.post('/predict', json=STUDENT, headers={'X-Request-ID': 'abc'}).headers['x-request-id'] == 'abc'
    spec = client.get('/openapi.json').json()['components']['schemas']['Student']
    assert set(spec['required']) == set(STUDENT) and spec['properties']['Mjob']['enum'] == ['teacher', 'health', 'services', 'at_home', 'other']
    assert spec['properties']['age']['minimum'] == 15 and spec['properties']['age']['maximum'] == 22


@pytest.mark.parametrize('body,field,reason', [
    ({**STUDENT, 'age': '17'}, 'age', 'valid integer'),                  # wrong type
    ({**STUDENT, 'Medu': 2.5}, 'Medu', 'whole number'),                  # wrong type for an ordinal
    ({**STUDENT, 'Mjob': 'astronaut'}, 'Mjob', "'teacher'"),            # unknown category
    ({**STUDENT, 'absences': 94}, 'absences', 'less than or equal to 93'),   # out of range
    ({k: v for k, v in STUDENT.items() if k != 'sex'}, 'sex', 'Field required'),   # missing field
    ({**STUDENT, 'G3': 12}, 'G3', 'Extra inputs are not permitted'),     # extra field (the target itself)
])
def test_bad_input_is_422_with_field_and_reason(client, body, field, reason):
    r = client.post('/predict', json=body)
    assert r.status_code == 422
    d = r.json()['detail']
    assert [x['field'] for x in d] == [field] and reason in d[0]['reason'], d
    assert r.json()['model_version'] and r.headers['x-request-id']


def test_malformed_bodies_never_500(client):
    for kw in ({'content': b'{not json', 'headers': {'content-type': 'application/json'}}, {'json': [1, 2]}, {'json': None},
               {'json': {'students': 'x'}}, {'json': {**STUDENT, 'age': None}}, {'json': {**STUDENT, 'age': 1e308}}):
        for url in ('/predict', '/predict/batch'):
            assert client.post(url, **kw).status_code == 422, (url, kw)


def test_oversized_batch_is_413(client):
    r = client.post('/predict/batch', json={'students': [STUDENT] * 51})
    assert r.status_code == 413 and 'maximum of 50' in r.json()['detail']
    assert client.post('/predict/batch', json={'students': [STUDENT] * 50}).status_code == 200


def test_not_ready_without_model():
    with TestClient(create_app(None, load_params(overrides=TINY))) as c:
        assert c.get('/health').status_code == 200
        assert c.get('/ready').status_code == 503 and c.post('/predict', json=STUDENT).status_code == 503
        assert 'Student' in c.get('/openapi.json').json()['components']['schemas']


def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def test_real_uvicorn_process(tiny_run):
    port = free_port()
    cli = str(Path(sys.executable).parent/'studentperf')
    proc = subprocess.Popen([cli, 'serve', '--model', str(tiny_run/'models'), '--port', str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f'http://127.0.0.1:{port}'
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(base + '/ready', timeout=1) as r:
                    if r.status == 200: break
            except (urllib.error.URLError, ConnectionError, OSError): time.sleep(0.25)
        else: pytest.fail(('server exited: ' + proc.stdout.read1().decode(errors='replace')) if proc.poll() is not None else 'server not ready after 30 s')
        req = urllib.request.Request(base + '/predict', data=json.dumps(STUDENT).encode(), headers={'content-type': 'application/json'})
        with urllib.request.urlopen(req, timeout=5) as r:
            body = json.loads(r.read())
            assert r.status == 200 and r.headers['X-Model-Version'] == body['model_version']
    finally:
        proc.terminate(); proc.wait(10)


def test_batch_cli_quarantines_bad_rows_with_exact_counts(tiny_run, tmp_path):
    d = pd.read_csv(data.demo_path(load_params()), sep=';', dtype=str, keep_default_na=False).head(40)
    d.loc[3, 'Mjob'] = 'astronaut'; d.loc[7, 'age'] = '99'; d.loc[11, 'studytime'] = 'x'
    src = tmp_path/'in.csv'
    src.write_text(';'.join(d.columns) + '\n' + '\n'.join(';'.join(r) for r in d.values) + '\nGP;F;17\n')
    invalid_in_demo = int(data.clean_table(src, load_params()).report['rows_quarantined'])  # includes the short row
    cli = str(Path(sys.executable).parent/'studentperf')
    r = subprocess.run([cli, 'predict', str(src), '-o', str(tmp_path/'out.csv'), '--model', str(tiny_run/'models')],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    out, q = pd.read_csv(tmp_path/'out.csv'), pd.read_csv(tmp_path/'out.quarantine.csv')
    assert len(out) + len(q) == 41 and len(q) == invalid_in_demo >= 4
    assert set(q['line']) >= {5, 9, 13, 42}
    assert 'rows_scored' in r.stdout and f'{len(out)}' in r.stdout
    assert list(out.columns[-4:]) == ['probability_pass', 'at_risk', 'risk_band', 'model_version']
