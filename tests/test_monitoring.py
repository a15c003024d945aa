"The prediction log end to end: CLI outcomes and purge, a failing store, Prometheus (also multiprocess), PostgreSQL, the reference profile."
import glob, json, os, pwd, shutil, socket, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd, pytest
from studentperf import monitoring as mon
from studentperf.runner import main

ROWS = [{'age': 16, 'absences': 4, 'sex': 'F'}, {'age': 17, 'absences': 0, 'sex': 'M'}, {'age': 18, 'absences': 9, 'sex': 'F'}]
RES = pd.DataFrame({'probability_pass': [0.9, 0.3, 0.6], 'at_risk': [False, True, False], 'risk_band': ['low', 'high', 'watch']})


def _filled(url, refs=('s-1', None, 's-3')):
    plog = mon.PredictionLog(url, flush_interval=0.02)
    ids = plog.record(ROWS, RES, 'v-test', threshold=0.5, student_refs=list(refs), source='batch')
    assert plog.close() and plog.errors == 0
    return ids


def test_cli_outcomes_idempotent_and_purge(tmp_path, capsys):
    url = f"sqlite:///{tmp_path/'log.sqlite'}"
    ids = _filled(url)
    f = tmp_path/'outcomes.csv'
    f.write_text(f"prediction_id,student_ref,G3\n{ids[0]},,14\n,s-3,7\nnot-an-id,,12\n,s-unknown,12\n{ids[1]},,abc\n{ids[1]},,25\n,,10\n{ids[1]},,9,extra\n")
    q = tmp_path/'q.csv'
    assert main(['monitor', 'outcomes', str(f), '--store', url, '--quarantine', str(q)]) == 0
    assert 'rows_read 8, ingested 2, already_present 0, quarantined 6' in capsys.readouterr().out
    bad = pd.read_csv(q)
    assert bad.line.tolist() == [4, 5, 6, 7, 8, 9]
    assert bad.reason.str.contains('unknown prediction_id').iloc[0] and bad.reason.str.contains('expected 3 fields').iloc[-1]
    assert main(['monitor', 'outcomes', str(f), '--store', url, '--quarantine', str(q)]) == 0   # again: nothing changes
    assert 'ingested 0, already_present 2, quarantined 6' in capsys.readouterr().out
    lab = mon.labelled_frame(url)
    assert dict(zip(lab.prediction_id, lab['pass'])) == {ids[0]: 1, ids[2]: 0}
    assert main(['monitor', 'purge', '--student-ref', 's-3', '--store', url]) == 0
    assert 'deleted 1 prediction(s) and 1 outcome(s)' in capsys.readouterr().out
    assert main(['monitor', 'purge', '--before', '2999-01-01', '--store', url]) == 0
    assert len(mon.predictions_frame(url)) == 0 and len(mon.outcomes_frame(url)) == 0


def test_outcomes_file_errors(tmp_path):
    url = f"sqlite:///{tmp_path/'log.sqlite'}"
    (tmp_path/'a.csv').write_text('name;G3\nx;12\n')
    assert main(['monitor', 'outcomes', str(tmp_path/'a.csv'), '--store', url]) == 1
    (tmp_path/'b.csv').write_text('prediction_id;grade\nx;12\n')
    with pytest.raises(ValueError, match='grade column G3'): mon.ingest_outcomes(url, tmp_path/'b.csv')


def test_failing_store_never_raises():
    before = mon.REGISTRY.get_sample_value('studentperf_prediction_log_errors_total')
    plog = mon.PredictionLog(f'postgresql+psycopg://nobody@127.0.0.1:{_free_port()}/none?connect_timeout=2', flush_interval=0.02)
    ids = plog.record(ROWS, RES, 'v-test', threshold=0.5)
    assert len(ids) == 3 and len(set(ids)) == 3
    plog.close(timeout=10)
    assert plog.errors == 3 and plog.warnings() and not plog.status()['ok'] and 'Error' in plog.status()['last_error']
    assert mon.REGISTRY.get_sample_value('studentperf_prediction_log_errors_total') - before == 3
    assert plog.record(ROWS[:1], RES, 'v-test', threshold=0.5) and plog.errors == 4   # mismatched lengths: counted, no raise


def test_record_overhead_under_1ms(tmp_path):
    plog = mon.PredictionLog(f"sqlite:///{tmp_path/'log.sqlite'}")
    row, res, t = ROWS[:1], RES.iloc[:1].to_dict('records'), []
    for _ in range(500):
        t0 = time.perf_counter(); plog.record(row, res, 'v-test', threshold=0.5); t.append(time.perf_counter() - t0)
    assert plog.close() and plog.written == 500
    assert np.median(t) < 0.001, f'p50 {np.median(t) * 1e3:.3f} ms'


def test_metrics_on_a_fastapi_app():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families
    app = FastAPI()
    plog = mon.PredictionLog('sqlite://', flush_interval=0.02)
    @app.post('/predict')
    def predict(): return {'prediction_id': plog.record(ROWS[:1], RES.iloc[:1], 'v-metrics', threshold=0.5)[0]}
    mon.instrument(app); mon.set_model_info('v-metrics')
    def val(text, name, **lab):
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in lab.items()))
    with TestClient(app) as c:
        before = c.get('/metrics').text   # the registry is the process's: other tests may have counted /predict already
        for _ in range(3): assert c.post('/predict').status_code == 200
        r = c.get('/metrics')
    plog.close()
    assert r.headers['content-type'].startswith('text/plain')
    samples = [s for f in text_string_to_metric_families(r.text) for s in f.samples]
    delta = lambda name, **lab: val(r.text, name, **lab) - val(before, name, **lab)
    assert delta('http_requests_total', path='/predict', method='POST', status='200') == 3
    assert delta('http_request_duration_seconds_count', path='/predict') == 3
    assert delta('studentperf_predictions_total', model_version='v-metrics', band='low') == 3
    assert val(r.text, 'studentperf_model_info', version='v-metrics') == 1
    assert any(s.name == 'studentperf_prediction_log_errors_total' for s in samples)


MP_SCRIPT = """
import os, sys
from studentperf import monitoring as mon
mon.set_model_info('v-mp')
pid = os.fork()                      # a second worker: its own pid, its own metric files
mon.count_predictions('v-mp', ['high', 'low', 'low'])
if pid == 0: os._exit(0)
os.waitpid(pid, 0)
sys.stdout.write(mon.metrics_response()[0].decode())
"""

def test_metrics_multiprocess(tmp_path):
    "Two worker processes (PROMETHEUS_MULTIPROC_DIR): /metrics adds their counts up."
    from prometheus_client.parser import text_string_to_metric_families
    out = subprocess.run([sys.executable, '-c', MP_SCRIPT], env={**os.environ, 'PROMETHEUS_MULTIPROC_DIR': str(tmp_path)},
                         capture_output=True, text=True, timeout=60, check=True).stdout
    s = {(x.name, tuple(sorted(x.labels.items()))): x.value for f in text_string_to_metric_families(out) for x in f.samples}
    assert s[('studentperf_predictions_total', (('band', 'low'), ('model_version', 'v-mp')))] == 4
    assert s[('studentperf_model_info', (('version', 'v-mp'),))] == 1


def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _pg_bin():
    found = shutil.which('pg_ctl') or next(iter(sorted(glob.glob('/usr/lib/postgresql/*/bin/pg_ctl'), reverse=True)), None)
    return Path(found).resolve().parent if found else None


@pytest.fixture
def postgres_url():
    "A throw-away PostgreSQL server on a free loopback port (run as the `postgres` user when we are root)."
    bindir = _pg_bin()
    if bindir is None: pytest.skip('PostgreSQL is not installed (pg_ctl missing): apt-get install -y postgresql')
    as_user = []
    if os.geteuid() == 0:
        try: pw = pwd.getpwnam('postgres')
        except KeyError: pytest.skip('running as root and no `postgres` user to run initdb as (initdb refuses root)')
        as_user = ['runuser', '-u', 'postgres', '--']
    d = Path(tempfile.mkdtemp(prefix='studentperf-pg-'))
    if as_user: os.chown(d, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    def run(*cmd): return subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=60)
    try:
        r = run(str(bindir/'initdb'), '-D', str(d/'data'), '-U', 'test', '-A', 'trust', '-E', 'UTF8', '--no-sync')
        assert r.returncode == 0, r.stderr
        r = run(str(bindir/'pg_ctl'), '-D', str(d/'data'), '-l', str(d/'log'), '-w', '-t', '30',
                '-o', f'-h 127.0.0.1 -p {port} -k {d} -F', 'start')
        assert r.returncode == 0, r.stderr + (d/'log').read_text() if (d/'log').exists() else r.stderr
        yield f'postgresql+psycopg://test@127.0.0.1:{port}/postgres'
    finally:
        run(str(bindir/'pg_ctl'), '-D', str(d/'data'), '-m', 'immediate', 'stop')
        shutil.rmtree(d, ignore_errors=True)


def test_postgres_log_and_queries(postgres_url, tmp_path):
    ids = _filled(postgres_url)
    eng = mon.make_engine(postgres_url)
    assert mon.ensure_schema(eng) == mon.SCHEMA_VERSION
    df = mon.predictions_frame(eng, model_version='v-test')
    assert sorted(df.prediction_id) == sorted(ids) and set(df.source) == {'batch'} and str(df.ts.dt.tz) == 'UTC'
    assert df.set_index('prediction_id').loc[ids[2], 'absences'] == 9
    f = tmp_path/'o.csv'; f.write_text(f'prediction_id;student_ref;pass\n{ids[1]};;yes\n;s-3;fail\n;nobody;1\n')
    n = mon.ingest_outcomes(eng, f, quarantine=tmp_path/'q.csv')
    assert (n['ingested'], n['quarantined']) == (2, 1)
    assert mon.ingest_outcomes(eng, f, quarantine=tmp_path/'q.csv')['already_present'] == 2
    lab = mon.labelled_frame(eng, since='2000-01-01')
    assert dict(zip(lab.prediction_id, lab['pass'])) == {ids[1]: 1, ids[2]: 0}
    assert mon.purge(eng, student_ref='s-3') == {'predictions': 1, 'outcomes': 1}
    assert mon.apply_retention(eng, 1)['predictions'] == 0
    eng.dispose()


def test_reference_profile_in_registry(tiny_run):
    reg = tiny_run/'models'/'registry'
    [version] = [d for d in reg.iterdir() if not d.name.startswith('.')]
    prof = json.loads((version/mon.PROFILE_FILE).read_text())
    card = json.loads((version/'model_card.json').read_text())
    assert set(prof['columns']) == set(card['input_schema'])
    num = [c for c, d in prof['columns'].items() if d['kind'] in ('numeric', 'grade')]
    assert num and all(sum(prof['columns'][c]['bin_counts']) == prof['columns'][c]['n'] for c in num)
    assert all(len(prof['columns'][c]['sample']) <= 1000 for c in num)
    assert 0 <= prof['prediction']['flagged_share'] <= 1 and prof['prediction']['n'] > 0
