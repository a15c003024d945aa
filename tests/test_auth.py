"Access control: the status matrix of every endpoint x key condition, the key store, restarts, safe binding, budget, audit log; and the real app wrapped by `secure_app`."
import asyncio, json, logging, statistics, time
from pathlib import Path
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from studentperf import auth
from studentperf.auth import KeyStore, secure_app, check_bind, InsecureBindError, audit, read_audit

DAY = 86400.0
# (method, path, scope needed): the routes of the real app, plus monitoring reads and state changes
ENDPOINTS = [('GET', '/health', None), ('GET', '/ready', None),
             ('POST', '/predict', 'predict'), ('POST', '/predict/batch', 'predict'), ('GET', '/model', 'predict'),
             ('GET', '/metrics', 'monitor'), ('GET', '/monitor/summary', 'monitor'),
             ('POST', '/monitor/purge', 'admin'), ('POST', '/model/promote', 'admin')]


def mini_app() -> FastAPI:
    "An app with the real app's routes; each answers the key id the middleware put in the request state."
    app = FastAPI()
    for method, path, _ in ENDPOINTS:
        async def h(request: Request): return {'key_id': getattr(request.state, 'key_id', None)}
        app.add_api_route(path, h, methods=[method])
    return app


class Clock:
    def __init__(self): self.t = time.time()
    def __call__(self): return self.t


@pytest.fixture
def env(tmp_path, monkeypatch):
    "A key store (cheap scrypt, injectable clock), one key per condition, and a client of the mini app."
    monkeypatch.setenv('STUDENTPERF_AUDIT', str(tmp_path/'audit.jsonl'))
    clock = Clock()
    ks = KeyStore(tmp_path/'auth'/'keys.json', clock=clock, scrypt_n=2**10, reload_every=0)
    k = {s: ks.create(s, [s])[0] for s in auth.SCOPES}
    k['revoked'], rec = ks.create('revoked', list(auth.SCOPES)); ks.revoke(rec['id'])
    k['expired'], _ = ks.create('expired', list(auth.SCOPES), expires=auth._now_iso(clock.t + DAY))
    clock.t += 2*DAY     # now it has expired (the other keys never expire)
    k['unknown'] = 'sp_0123abcd_' + 'x'*43
    k['unknown_secret'] = k['predict'][:-4] + 'AAAA' if not k['predict'].endswith('AAAA') else k['predict'][:-4] + 'BBBB'
    with TestClient(secure_app(mini_app(), ks)) as c: yield ks, k, c, clock


def call(c, method, path, headers=None):
    return c.request(method, path, headers=headers or {}, json={} if method == 'POST' else None)


def test_status_matrix(env):
    "Every endpoint x {no key, malformed header, unknown key, revoked, expired, wrong scope, right scope}."
    ks, k, c, _ = env
    bearer = lambda key: {'Authorization': f'Bearer {key}'}
    seen = 0
    for method, path, need in ENDPOINTS:
        wrong = next(s for s in auth.SCOPES if s != need)
        cases = {'no key': ({}, 401), 'malformed: Basic': ({'Authorization': 'Basic dXNlcjpwdw=='}, 401),
                 'malformed: empty Bearer': ({'Authorization': 'Bearer '}, 401), 'malformed: not a key': (bearer('hunter2'), 401),
                 'unknown key': (bearer(k['unknown']), 401), 'unknown secret': (bearer(k['unknown_secret']), 401),
                 'revoked': (bearer(k['revoked']), 401), 'expired': (bearer(k['expired']), 401),
                 'wrong scope': (bearer(k[wrong]), 403), 'right scope': (bearer(k[need or 'predict']), 200)}
        for case, (headers, status) in cases.items():
            want = 200 if need is None else status     # /health and /ready are open to load balancers
            r = call(c, method, path, headers)
            assert r.status_code == want, (method, path, case, r.status_code, r.text)
            assert r.headers['content-type'].startswith('application/json')
            if want == 401: assert r.headers['www-authenticate'].startswith('Bearer'), (path, case)
            if want == 403: assert f'scope="{need}"' in r.headers['www-authenticate'] and need in r.json()['detail']
            if want == 200 and need: assert r.json()['key_id'] == k[need][3:11]   # the id, never the key
            seen += 1
    assert seen == len(ENDPOINTS)*10
    assert 'revoked' in call(c, 'POST', '/predict', bearer(k['revoked'])).json()['detail']
    assert 'expired' in call(c, 'POST', '/predict', bearer(k['expired'])).json()['detail']


def test_store_never_holds_the_key(env, tmp_path):
    ks, k, _, _ = env
    text = ks.path.read_text()
    for key in k.values(): assert key not in text and key.split('_', 2)[2] not in text
    assert oct(ks.path.stat().st_mode & 0o777) == '0o600' and oct(ks.path.parent.stat().st_mode & 0o777) == '0o700'
    listed = json.dumps(ks.keys())
    assert 'digest' not in listed and 'salt' not in listed
    assert sorted(r['status'] for r in ks.keys()) == ['active']*3 + ['expired', 'revoked']


def test_key_works_across_restart_and_revocation_is_live(env):
    ks, k, c, clock = env
    again = KeyStore(ks.path, clock=clock, reload_every=0.1)   # a new process: new store instance, new app
    with TestClient(secure_app(mini_app(), again)) as c2:
        assert c2.post('/predict', headers={'Authorization': f"Bearer {k['predict']}"}).status_code == 200
        KeyStore(ks.path).revoke(k['predict'][3:11])      # `studentperf keys revoke` in another process
        time.sleep(0.15)                                  # the server checks the file at most every reload_every s
        assert c2.post('/predict', headers={'Authorization': f"Bearer {k['predict']}"}).status_code == 401
    assert c.post('/predict', headers={'Authorization': f"Bearer {k['predict']}"}).status_code == 401


def test_broken_store_file_keeps_last_keys(env, caplog):
    "A hand-edited, broken store does not make a running server fail requests (no 5xx); a new process refuses to start on it."
    ks, k, c, _ = env
    ks.path.write_text('{not json')
    with caplog.at_level(logging.ERROR, logger='studentperf.auth'):
        assert c.post('/predict', headers={'Authorization': f"Bearer {k['predict']}"}).status_code == 200
        assert c.post('/predict', headers={'Authorization': f"Bearer {k['revoked']}"}).status_code == 401
    assert 'unreadable' in caplog.text
    with pytest.raises(auth.KeyStoreError, match='unreadable'): KeyStore(ks.path)


def test_guessing_secrets_is_bounded(env):
    "Wrong secrets for a known key id: scrypt runs at most MAX_CHECKS times a minute; the real (verified) key keeps working."
    ks, k, c, _ = env
    good = {'Authorization': f"Bearer {k['predict']}"}
    assert c.post('/predict', headers=good).status_code == 200
    kid = k['predict'][3:11]
    details = [c.post('/predict', headers={'Authorization': f'Bearer sp_{kid}_{i:043d}'}).json()['detail'] for i in range(auth.MAX_CHECKS + 3)]
    blocked = ['too many failed attempts' in d for d in details]   # the first, successful check counted too
    assert blocked == [False]*(auth.MAX_CHECKS - 1) + [True]*4
    assert c.post('/predict', headers=good).status_code == 200


def test_request_budget_resets(tmp_path):
    ks = KeyStore(tmp_path/'keys.json', scrypt_n=2**10)
    a, _ = ks.create('a', ['predict']); b, _ = ks.create('b', ['predict'])
    t = [0.0]
    with TestClient(secure_app(mini_app(), ks, requests_per_minute=3, clock=lambda: t[0])) as c:
        h = lambda key: {'Authorization': f'Bearer {key}'}
        assert [c.post('/predict', headers=h(a)).status_code for _ in range(3)] == [200]*3
        r = c.post('/predict', headers=h(a))
        assert r.status_code == 429 and r.headers['retry-after'] == '60' and 'budget' in r.json()['detail']
        assert c.post('/predict', headers=h(b)).status_code == 200          # per key
        assert c.get('/health').status_code == 200                          # open endpoints are not budgeted
        t[0] = 45.2; assert c.post('/predict', headers=h(a)).headers['retry-after'] == '15'
        t[0] = 60.0; assert c.post('/predict', headers=h(a)).status_code == 200   # the budget resets


def test_bind_refused_without_keys(tmp_path, caplog):
    ks = KeyStore(tmp_path/'keys.json', scrypt_n=2**10)
    for host in ('0.0.0.0', '::', '192.168.1.10', 'myhost.school.example'):
        with pytest.raises(InsecureBindError, match='refusing to serve on .* without API keys.*--insecure-no-auth'): check_bind(host, ks)
    with caplog.at_level(logging.WARNING, logger='studentperf.auth'):
        assert check_bind('127.0.0.1', ks).enforce is False and 'loopback only' in caplog.text
        assert check_bind('localhost', ks).enforce is False and check_bind('::1', ks).enforce is False
        caplog.clear()
        b = check_bind('0.0.0.0', ks, insecure_no_auth=True, warn_every=0.05)
        time.sleep(0.3); b.stop.set()
        assert b.enforce is False and caplog.text.count('INSECURE: serving on 0.0.0.0') >= 3   # at start, then periodically
    _, rec = ks.create('sis', ['predict'])
    assert check_bind('0.0.0.0', ks).enforce is True
    ks.revoke(rec['id'])   # only revoked keys: as good as none
    with pytest.raises(InsecureBindError): check_bind('0.0.0.0', ks)


def test_protect_from_env(tmp_path, monkeypatch):
    "What a uvicorn worker (serving.app_from_env, the container) does: no host given = a network address."
    monkeypatch.setenv('STUDENTPERF_KEYS', str(tmp_path/'keys.json'))
    for var in ('STUDENTPERF_HOST', 'STUDENTPERF_INSECURE_NO_AUTH'): monkeypatch.delenv(var, raising=False)
    with pytest.raises(InsecureBindError, match='0.0.0.0'): auth.protect_from_env(mini_app())
    monkeypatch.setenv('STUDENTPERF_HOST', '127.0.0.1')
    assert auth.protect_from_env(mini_app()).enforce is False
    monkeypatch.setenv('STUDENTPERF_HOST', '10.0.0.5'); monkeypatch.setenv('STUDENTPERF_INSECURE_NO_AUTH', '1')
    b = auth.protect_from_env(mini_app()); b.stop.set()
    assert b.enforce is False
    key, _ = KeyStore(tmp_path/'keys.json', scrypt_n=2**10).create('sis', ['predict'])
    app = mini_app()
    assert auth.protect_from_env(app).enforce is True
    with TestClient(app) as c:
        assert c.post('/predict').status_code == 401
        assert c.post('/predict', headers={'Authorization': f'Bearer {key}'}).status_code == 200


def test_cli_and_audit(tmp_path, monkeypatch, capsys):
    from studentperf.runner import main
    monkeypatch.setenv('STUDENTPERF_AUDIT', str(tmp_path/'audit.jsonl'))
    monkeypatch.setenv('STUDENTPERF_KEYS', str(tmp_path/'keys.json'))
    assert main(['keys', 'create', '--name', 'sis', '--scope', 'predict', '--scope', 'monitor', '--expires', '2099-12-31']) == 0
    key = next(l for l in capsys.readouterr().out.splitlines() if l.startswith('sp_'))
    kid = key[3:11]
    assert KeyStore(tmp_path/'keys.json').verify(key)['scopes'] == ['monitor', 'predict']
    assert main(['keys', 'list']) == 0
    out = capsys.readouterr().out
    assert kid in out and 'active' in out and key not in out and key.split('_', 2)[2] not in out
    assert main(['keys', 'revoke', kid]) == 0 and 'revoked' in capsys.readouterr().out
    assert main(['keys', 'revoke', 'nope1234']) == 1 and 'no key with id' in capsys.readouterr().err
    assert main(['keys', 'create', '--name', 'x', '--scope', 'predict', '--expires', '2001-01-01']) == 1
    assert 'in the past' in capsys.readouterr().err
    audit('model.promote', version='v2', previous='v1')        # what `model promote` will call
    log = read_audit()
    assert [r['action'] for r in log] == ['key.create', 'key.revoke', 'model.promote']
    assert all(r['actor'].startswith('local:') and r['time'].endswith('Z') for r in log)
    assert log[1]['key_id'] == kid and log[2]['version'] == 'v2' and key not in (tmp_path/'audit.jsonl').read_text()
    audit('model.promote', actor=kid, version='v3')              # through the API: the key id is the actor
    assert read_audit()[-1]['actor'] == kid


def test_openapi_declares_bearer(env):
    _, _, c, _ = env
    doc = c.get('/openapi.json').json()
    assert doc['components']['securitySchemes']['apiKey'] == {**doc['components']['securitySchemes']['apiKey'], 'type': 'http', 'scheme': 'bearer'}
    assert doc['paths']['/predict']['post']['security'] == [{'apiKey': ['predict']}]
    assert doc['paths']['/metrics']['get']['security'] == [{'apiKey': ['monitor']}]
    assert 'security' not in doc['paths']['/health']['get']
    assert c.get('/docs').status_code == 200


def test_auth_cost(tmp_path):
    "The middleware's own cost per request with a cached key (goal: p50 < 0.2 ms), measured on a no-op app."
    ks = KeyStore(tmp_path/'keys.json')     # default scrypt cost
    key, _ = ks.create('bench', ['predict'])
    async def noop(scope, receive, send): pass
    mw = auth.AuthMiddleware(noop, ks, auth.RateLimiter(10**9))
    scope = lambda: {'type': 'http', 'method': 'POST', 'path': '/predict', 'headers': [(b'authorization', f'Bearer {key}'.encode())]}
    async def run(n):
        t0 = time.perf_counter(); await mw(scope(), None, None); first = time.perf_counter() - t0
        ts = []
        for _ in range(n):
            t0 = time.perf_counter(); await mw(scope(), None, None); ts.append(time.perf_counter() - t0)
        return first, ts
    first, ts = asyncio.run(run(2000))
    p50 = statistics.median(ts)*1e3
    print(f'auth: first request (scrypt) {first*1e3:.1f} ms, cached p50 {p50:.4f} ms, p99 {sorted(ts)[int(len(ts)*.99)]*1e3:.4f} ms')
    assert p50 < 0.2


# --- the real app, wrapped -------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def real(tiny_run, tmp_path_factory):
    from studentperf.serving import create_app
    from studentperf.config import load_params
    from conftest import TINY
    d = tmp_path_factory.mktemp('real_auth')
    ks = KeyStore(d/'keys.json', scrypt_n=2**10, reload_every=0)
    keys = {s: ks.create(s, [s])[0] for s in auth.SCOPES}
    params = load_params(overrides=TINY)
    app = create_app(tiny_run/'models', params)
    assert auth.protect(app, '0.0.0.0', params=params, keystore=ks).enforce     # what `serve --host 0.0.0.0` does
    with TestClient(app) as c: yield c, keys, ks, tiny_run


def student(card):
    return {c: (s['values'][0] if 'values' in s else s.get('min', 0)) for c, s in card['input_schema'].items()}


def test_real_app_matrix(real):
    c, keys, ks, _ = real
    h = lambda s: {'Authorization': f'Bearer {keys[s]}'}
    assert c.get('/health').status_code == 200 and c.get('/ready').status_code == 200
    r = c.get('/model')
    assert r.status_code == 401 and r.headers['www-authenticate'].startswith('Bearer')
    assert r.json()['request_id'] == r.headers['x-request-id']       # refusals carry the app's request id
    card = c.get('/model', headers=h('predict')).json()
    one = student(card)
    assert c.post('/predict', json=one).status_code == 401
    assert c.post('/predict', json=one, headers=h('monitor')).status_code == 403
    r = c.post('/predict', json=one, headers=h('predict'))
    assert r.status_code == 200 and 0 <= r.json()['probability_pass'] <= 1
    assert c.post('/predict/batch', json={'students': [one, one]}, headers=h('predict')).json()['count'] == 2
    assert c.post('/predict/batch', json={'students': [one]}, headers=h('admin')).status_code == 403
    assert c.get('/metrics', headers=h('predict')).status_code == 403
    assert c.get('/metrics', headers=h('monitor')).status_code == 200
    assert c.post('/model/promote', headers=h('monitor')).status_code == 403       # any unlisted route needs admin
    assert c.post('/predict', json={'bad': 1}, headers=h('predict')).status_code == 422   # validation still applies after auth
    doc = c.get('/openapi.json').json()
    assert doc['paths']['/predict']['post']['security'] == [{'apiKey': ['predict']}] and 'apiKey' in doc['components']['securitySchemes']
