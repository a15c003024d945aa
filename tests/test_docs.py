"""The docs site (tools/docs.py) built without Quarto into a temporary folder, and its checker (tools/check_docs.py).

One build per module, from a copy of the project (so nbdev's `_proc/` and `nbs/sidebar.yml` stay out of the checkout),
with the executed data-preparation notebook of a real run, so a rendered figure is checked too."""
import importlib.util, os, re, shutil, subprocess, sys
import nbformat
import pytest
from conftest import ROOT

PY = sys.executable


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT/'tools'/f'{name}.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('docs')
    proj = tmp/'proj'
    proj.mkdir()
    for f in ('settings.ini', 'params.yaml'): shutil.copy(ROOT/f, proj/f)
    for d in ('nbs', 'studentperf', 'data'):
        shutil.copytree(ROOT/d, proj/d, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints', 'sidebar.yml'))
    from studentperf.runner import run_stage
    run_stage('prepare', tmp/'run', {'run.quick': True})               # an executed notebook with figures
    env = {**os.environ, 'PYTHONPATH': str(proj)}
    r = subprocess.run([PY, str(ROOT/'tools'/'docs.py'), '--root', str(proj), '--out', str(tmp/'site'),
                        '--executed', str(tmp/'run'/'reports')], capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"docs build failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return dict(site=tmp/'site', proj=proj, out=r.stdout, env=env)


def check(site, proj, env):
    return subprocess.run([PY, str(ROOT/'tools'/'check_docs.py'), '--site', str(site), '--root', str(proj)],
                          capture_output=True, text=True, env=env)


def test_site_passes_the_checks(built):
    r = check(built['site'], built['proj'], built['env'])
    assert r.returncode == 0, r.stdout[-4000:]
    assert ': OK' in r.stdout


def test_a_page_per_notebook_with_nbdev_names(built):
    site = built['site']
    names = {p.name for p in site.glob('*.html')}
    assert {'index.html', 'api.html', 'search.html', 'config.html', 'data_prep.html', 'cli.html'} <= names
    for nb in (ROOT/'nbs').glob('[0-9]*.ipynb'):
        assert re.sub(r'^\d+[a-zA-Z0-9]*_', '', nb.stem) + '.html' in names, nb.name
    idx = (site/'index.html').read_text()
    assert 'href="data_prep.html"' in idx and 'href="api.html"' in idx     # navigation to every page
    assert not (built['proj']/'nbs'/'sidebar.yml').exists()           # the build does not write into nbs/


def test_show_doc_entries_and_api_index(built):
    site = built['site']
    cfg = (site/'config.html').read_text()
    assert 'id="load_params"' in cfg and 'Read the parameters and apply' in cfg          # show_doc: anchor + docstring
    assert 'dotted-key overrides, applied in order' in cfg                             # docments parameter comment
    api = (site/'api.html').read_text()
    assert 'href="config.html#load-params"' in api or 'href="config.html#load_params"' in api
    assert 'studentperf.runner' in api and '>report<' in api
    assert 'load_params' in (site/'searchindex.js').read_text()                       # search


def test_executed_outputs_and_figures(built):
    assert '01_data_prep.ipynb' in built['out']
    page = (built['site']/'data_prep.html').read_text()
    imgs = re.findall(r'<img[^>]+src="([^"]+\.png)"', page)
    assert imgs and all((built['site']/i).exists() for i in imgs)
    assert 'injected-parameters' in page or 'run.quick' in page                       # the run's parameters are shown


def test_stale_executed_notebook_is_not_used(tmp_path):
    docs = load_tool('docs')
    nb = nbformat.read(ROOT/'nbs'/'01_data_prep.ipynb', as_version=4)
    nb.cells[-1].source += '\n# changed'
    nbformat.write(nb, tmp_path/'01_data_prep.ipynb')
    notes = []
    stage, swapped = docs.stage_notebooks(ROOT, tmp_path, notes.append)
    assert swapped == [] and 'different version' in notes[0]
    assert (stage/'01_data_prep.ipynb').read_bytes() == (ROOT/'nbs'/'01_data_prep.ipynb').read_bytes()
    shutil.rmtree(stage.parent)


def test_checker_finds_broken_links_missing_entries_and_pages(built, tmp_path):
    site = tmp_path/'site'
    shutil.copytree(built['site'], site)
    cfg = site/'config.html'
    cfg.write_text(cfg.read_text().replace('id="load_params"', 'id="x1"').replace('id="load-params"', 'id="x2"')
                   .replace('</body>', '<a href="nowhere.html">x</a><a href="cli.html#no-such-anchor">y</a></body>'))
    (site/'data_prep.html').unlink()
    r = check(site, built['proj'], built['env'])
    assert r.returncode == 1
    for msg in ('has no page data_prep.html', "link 'nowhere.html': no such file", 'no anchor #no-such-anchor on cli.html',
                'studentperf.config.load_params: no show_doc entry #load_params on config.html'):
        assert msg in r.stdout, r.stdout[-3000:]


def test_nbdev_quarto_files_are_valid():
    r = load_tool('check_docs')
    import configparser
    cp = configparser.ConfigParser(); cp.read(ROOT/'settings.ini')
    assert r.check_quarto(ROOT, dict(cp['DEFAULT'])) == []
