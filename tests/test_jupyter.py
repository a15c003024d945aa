"""Jupyter authoring (issue 17): the project's JupyterLab serves the notebooks and runs them in the .venv kernel,
saving a notebook from Jupyter cleans it the nbdev way, and `make hooks` (run by `make install`) installs nbdev's
git hooks in a fresh clone. Servers listen on 127.0.0.1 on a free port, with Jupyter's config, data and runtime
folders (and HOME, where nbdev_install_hooks writes) in temporary folders: nothing here reads or writes the real home."""
import json, os, shutil, socket, subprocess, sys, time, uuid
from contextlib import contextmanager
from pathlib import Path
import httpx, pytest
import studentperf
from studentperf.config import project_root

ROOT = project_root()
BIN = ROOT/'.venv'/'bin'
CONFIG = ROOT/'jupyter_server_config.py'  # what `make lab` passes with --config

needs_jupyter = pytest.mark.skipif(not (BIN/'jupyter-lab').exists() or not (BIN/'jupyter-server').exists(),
                                   reason=f'{BIN}/jupyter-lab or jupyter-server is missing (make install installs jupyterlab)')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _jupyter_env(tmp):
    "The environment with Jupyter's and nbdev's per-user folders moved under `tmp`."
    env = {k: v for k, v in os.environ.items() if not k.startswith('JUPYTER')}
    for k, sub in [('JUPYTER_CONFIG_DIR', 'config'), ('JUPYTER_DATA_DIR', 'data'),
                   ('JUPYTER_RUNTIME_DIR', 'runtime'), ('HOME', 'home')]:
        (tmp/sub).mkdir(parents=True, exist_ok=True); env[k] = str(tmp/sub)
    env['PATH'] = f'{BIN}{os.pathsep}{env.get("PATH", "")}'
    return env


@contextmanager
def jupyter(root: Path, tmp: Path, app='lab'):
    "`jupyter lab` (or `server`) as `make lab` starts it, serving `root` from `root`: (base URL, token, httpx client)."
    port, token = _free_port(), uuid.uuid4().hex
    cmd = [str(BIN/'jupyter'), app, f'--config={CONFIG}', f'--ServerApp.root_dir={root}', '--ip=127.0.0.1',
           f'--port={port}', '--ServerApp.port_retries=0', '--no-browser', f'--IdentityProvider.token={token}']
    if os.geteuid() == 0: cmd.append('--allow-root')  # as `make lab` does (containers)
    tmp.mkdir(parents=True, exist_ok=True); log = (tmp/'server.log').open('wb')
    proc = subprocess.Popen(cmd, cwd=root, env=_jupyter_env(tmp), stdout=log, stderr=subprocess.STDOUT)
    url = f'http://127.0.0.1:{port}'
    client = httpx.Client(base_url=url, headers={'Authorization': f'token {token}'}, timeout=10)
    try:
        for _ in range(300):
            if proc.poll() is not None: break
            try:
                if client.get('/api/status').status_code == 200: break
            except httpx.TransportError: pass
            time.sleep(0.1)
        else: pytest.fail(f'jupyter {app} did not answer within 30 s:\n{(tmp/"server.log").read_text()}')
        if proc.poll() is not None: pytest.fail(f'jupyter {app} exited:\n{(tmp/"server.log").read_text()}')
        yield url, token, client
    finally:
        try: client.post('/api/shutdown')
        except httpx.TransportError: pass
        client.close()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        log.close()


def _execute(url, token, kernel_id, code, timeout=30):
    "Run `code` in the kernel over its websocket (Jupyter's message protocol): ({mime: data}, stream text, status)."
    import websocket
    ws = websocket.create_connection(f'{url.replace("http", "ws")}/api/kernels/{kernel_id}/channels?token={token}',
                                     timeout=timeout)
    try:
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({'header': {'msg_id': msg_id, 'username': 'test', 'session': uuid.uuid4().hex,
                                       'msg_type': 'execute_request', 'version': '5.3'},
                            'parent_header': {}, 'metadata': {}, 'channel': 'shell',
                            'content': {'code': code, 'silent': False, 'store_history': False,
                                        'user_expressions': {}, 'allow_stdin': False}}))
        result, stream, status, deadline = {}, '', None, time.time()+timeout
        while time.time() < deadline:
            m = json.loads(ws.recv())
            if m.get('parent_header', {}).get('msg_id') != msg_id: continue
            t = m['msg_type']
            if t == 'execute_result': result = m['content']['data']
            elif t == 'stream': stream += m['content']['text']
            elif t == 'error': pytest.fail('kernel error: ' + '\n'.join(m['content']['traceback']))
            elif t == 'execute_reply': status = m['content']['status']
            if status and t == 'status' and m['content']['execution_state'] == 'idle': break
            if status and result: break
        return result, stream, status
    finally: ws.close()


@needs_jupyter
def test_lab_lists_notebooks_and_runs_the_venv_kernel(tmp_path):
    with jupyter(ROOT, tmp_path) as (url, token, client):
        assert client.get('/lab').status_code == 200
        listing = client.get('/api/contents/nbs').json()
        names = {o['name'] for o in listing['content']}
        assert {'index.ipynb', '00_config.ipynb', '01_data_prep.ipynb'} <= names, names
        specs = client.get('/api/kernelspecs').json()
        assert specs['default'] in specs['kernelspecs'], specs
        r = client.post('/api/kernels', json={'name': specs['default']})
        assert r.status_code == 201, r.text
        kid = r.json()['id']
        result, stream, status = _execute(url, token, kid,
                                          'import sys, studentperf; print(sys.prefix); studentperf.__version__')
        assert status == 'ok'
        assert result['text/plain'] == repr(studentperf.__version__)
        assert Path(stream.strip()).resolve() == (ROOT/'.venv').resolve(), stream  # the project's .venv kernel
        assert client.delete(f'/api/kernels/{kid}').status_code == 204


def _dirty_notebook():
    "A notebook as Jupyter saves it after a run: execution counts, outputs with object ids, machine metadata."
    return {'nbformat': 4, 'nbformat_minor': 5,
            'metadata': {'kernelspec': {'display_name': 'Python 3 (ipykernel)', 'language': 'python', 'name': 'python3'},
                         'language_info': {'name': 'python', 'version': '3.11.2'}},
            'cells': [{'cell_type': 'code', 'id': 'a1', 'execution_count': 7,
                       'metadata': {'tags': ['parameters'], 'collapsed': False, 'ExecuteTime': {'end_time': 'x'}},
                       'source': 'object()',
                       'outputs': [{'output_type': 'execute_result', 'execution_count': 7, 'metadata': {},
                                    'data': {'text/plain': '<object object at 0x7f3a2c1b2d40>'}}]},
                      {'cell_type': 'code', 'id': 'a2', 'execution_count': 8, 'metadata': {}, 'source': 'print(1)',
                       'outputs': [{'output_type': 'stream', 'name': 'stdout', 'text': '1\n'}]}]}


@needs_jupyter
def test_saving_from_jupyter_cleans_the_notebook(tmp_path):
    proj = tmp_path/'proj'; (proj/'nbs').mkdir(parents=True)
    shutil.copy(ROOT/'settings.ini', proj/'settings.ini')  # a scratch project with this project's nbdev settings
    with jupyter(proj, tmp_path/'jupyter', app='server') as (url, token, client):
        r = client.put('/api/contents/nbs/scratch.ipynb', json={'type': 'notebook', 'format': 'json',
                                                                 'content': _dirty_notebook()})
        assert r.status_code in (200, 201), r.text
        # the hook reads settings.ini at every save: with jupyter_hooks off, Jupyter saves the notebook as it is
        ini = proj/'settings.ini'; ini.write_text(ini.read_text().replace('jupyter_hooks = True', 'jupyter_hooks = False'))
        r = client.put('/api/contents/nbs/raw.ipynb', json={'type': 'notebook', 'format': 'json',
                                                             'content': _dirty_notebook()})
        assert r.status_code in (200, 201), r.text
    assert json.loads((proj/'nbs'/'raw.ipynb').read_text())['cells'][0]['execution_count'] == 7
    assert 'Pre-save hook failed' not in (tmp_path/'jupyter'/'server.log').read_text()
    saved = (proj/'nbs'/'scratch.ipynb').read_text()
    nb = json.loads(saved)
    c1, c2 = nb['cells']
    assert [c1['execution_count'], c2['execution_count']] == [None, None]
    assert c1['outputs'][0]['execution_count'] is None
    assert ''.join(c1['outputs'][0]['data']['text/plain']) == '<object object>'  # no memory address
    assert c1['metadata'] == {'tags': ['parameters']}  # papermill's tag kept, the rest dropped
    assert ''.join(c2['outputs'][0]['text']) == '1\n'  # outputs stay, as with nbdev_clean (clear_all = False)
    assert set(nb['metadata']) == {'kernelspec'} and nb['metadata']['kernelspec']['display_name'] == 'python3'
    assert 'language_info' not in nb['metadata']
    # byte for byte what nbdev_clean writes, so `make check-sync` (CI) finds nothing to clean
    ini.write_text(ini.read_text().replace('jupyter_hooks = False', 'jupyter_hooks = True'))
    r = subprocess.run([str(BIN/'nbdev_clean'), '--fname', 'nbs/scratch.ipynb'], cwd=proj, capture_output=True, text=True)
    assert r.returncode == 0 and (proj/'nbs'/'scratch.ipynb').read_text() == saved, r.stderr


def _git(*args, cwd, env=None):
    return subprocess.run(['git', *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which('git') is None or shutil.which('make') is None, reason='git or make is missing')
@pytest.mark.skipif(not (ROOT/'.git').exists(), reason=f'{ROOT} is not a git checkout')
@pytest.mark.skipif(not (BIN/'nbdev_install_hooks').exists(), reason=f'{BIN}/nbdev_install_hooks is missing')
def test_make_hooks_installs_nbdev_hooks_in_a_fresh_clone(tmp_path):
    clone = tmp_path/'clone'
    env = _jupyter_env(tmp_path)
    env.update(GIT_CONFIG_NOSYSTEM='1', GIT_AUTHOR_NAME='t', GIT_AUTHOR_EMAIL='t@t', GIT_COMMITTER_NAME='t',
               GIT_COMMITTER_EMAIL='t@t')
    _git('clone', '-q', str(ROOT), str(clone), cwd=tmp_path, env=env)
    for f in ['Makefile', 'settings.ini']: shutil.copy(ROOT/f, clone/f)  # the working copy's, committed or not
    # `make install` = the venv (.venv/.installed) + `make hooks`; the venv is this checkout's, to skip the install
    r = subprocess.run(['make', '--no-print-directory', 'hooks', f'VENV={ROOT/".venv"}'], cwd=clone, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'Hooks are installed.' in r.stdout
    assert _git('config', '--get', 'include.path', cwd=clone, env=env) == '../.gitconfig'
    assert _git('config', '--get', 'merge.nbdev-merge.driver', cwd=clone, env=env) == \
        f'{BIN}/nbdev_merge %O %A %B %P'
    assert _git('check-attr', 'merge', '--', 'nbs/00_config.ipynb', cwd=clone, env=env).endswith('nbdev-merge')
    hook = clone/'.git'/'hooks'/'post-merge'
    assert os.access(hook, os.X_OK) and f'{BIN}/nbdev_trust' in hook.read_text()
    assert 'nbdev_clean_jupyter' in (tmp_path/'home'/'.jupyter'/'jupyter_server_config.py').read_text()
    # a second run changes nothing (make install runs it every time)
    before = [(clone/f).read_text() for f in ['.gitattributes', '.gitconfig']]
    r = subprocess.run(['make', '--no-print-directory', 'hooks', f'VENV={ROOT/".venv"}'], cwd=clone, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and before == [(clone/f).read_text() for f in ['.gitattributes', '.gitconfig']]
    # the pre-commit hook refuses a notebook that nbdev_clean would change, and takes it once cleaned
    hook = clone/'.git'/'hooks'/'pre-commit'
    assert os.access(hook, os.X_OK) and f'{BIN}/nbdev_clean' in hook.read_text()
    nbp = clone/'nbs'/'00_config.ipynb'
    nb = json.loads(nbp.read_text())
    code_cell = next(c for c in nb['cells'] if c['cell_type'] == 'code'); code_cell['execution_count'] = 3
    nbp.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False)+'\n')
    _git('add', 'nbs/00_config.ipynb', cwd=clone, env=env)
    c = subprocess.run(['git', 'commit', '-qm', 'dirty'], cwd=clone, env=env, capture_output=True, text=True)
    assert c.returncode != 0 and 'not clean: nbs/00_config.ipynb' in c.stderr, c.stdout + c.stderr
    subprocess.run([str(BIN/'nbdev_clean'), '--fname', str(nbp)], cwd=clone, check=True, capture_output=True)
    assert nbp.read_text() == _git('show', 'HEAD:nbs/00_config.ipynb', cwd=clone, env=env) + '\n'
    # a conflicting edit of the same cell on two branches: the merge stops, and the notebook stays a valid notebook
    # (nbdev_merge puts each side in its own cell between marker cells) instead of JSON with git's markers
    clean = lambda: subprocess.run([str(BIN/'nbdev_clean'), '--fname', str(nbp)], cwd=clone, check=True, capture_output=True)
    def edit(text):
        nb = json.loads(nbp.read_text()); nb['cells'][0]['source'] = text
        nbp.write_text(json.dumps(nb, indent=1)+'\n'); clean(); _git('commit', '-qam', text, cwd=clone, env=env)
    base = _git('rev-parse', '--abbrev-ref', 'HEAD', cwd=clone, env=env)
    _git('checkout', '-qb', 'other', cwd=clone, env=env); edit('# one title')
    _git('checkout', '-q', base, cwd=clone, env=env); edit('# another title')
    m = subprocess.run(['git', 'merge', 'other'], cwd=clone, env=env, capture_output=True, text=True)
    assert m.returncode != 0 and 'CONFLICT' in m.stdout, m.stdout + m.stderr
    merged = json.loads(nbp.read_text())  # valid JSON
    srcs = [''.join(c['source']) for c in merged['cells']]
    assert srcs[:5] == ['`<<<<<<< HEAD`', '# another title', '`=======`', '# one title', '`>>>>>>> other`'], srcs[:5]
    assert srcs[5:] == [''.join(c['source']) for c in json.loads(_git('show', f'{base}~1:nbs/00_config.ipynb',
                                                                       cwd=clone, env=env))['cells'][1:]]
    _git('merge', '--abort', cwd=clone, env=env)
