"""`studentperf report`: stages executed with papermill into reports/<dataset>-<setup>/, with an index.html."""
import json, os, subprocess, sys
from pathlib import Path
import nbformat
import pytest
from studentperf import runner
from studentperf.data import file_sha256
from conftest import ROOT

CLI = [str(Path(sys.executable).parent/'studentperf')]


def cli(*args, cwd='/'):
    return subprocess.run(CLI + ['report', *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope='module')
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp('reports')
    r = cli('--dataset', 'demo', '--setup', 'B', '--stages', 'prepare', '--out', out, '--quick', '--set', 'schemas.uci.target.pass_threshold=12')
    assert r.returncode == 0, r.stderr[-3000:]
    return out/'demo-B', r


def test_report_folder_has_notebooks_html_and_index(demo_report):
    folder, r = demo_report
    assert {'01_data_prep.ipynb', '01_data_prep.html', 'index.html', 'report.json', 'data'} <= {p.name for p in folder.iterdir()}
    assert str(folder/'index.html') in r.stdout and 'rows_kept' in r.stdout


def test_injected_parameters_are_visible(demo_report):
    folder, _ = demo_report
    nb = nbformat.read(folder/'01_data_prep.ipynb', as_version=4)
    inj = [c for c in nb.cells if 'injected-parameters' in c.metadata.get('tags', [])]
    assert len(inj) == 1 and '"run.setup": "B"' in inj[0].source and '"schemas.uci.target.pass_threshold": 12' in inj[0].source
    page = (folder/'01_data_prep.html').read_text()
    assert 'schemas.uci.target.pass_threshold' in page and 'run.setup' in page
    rep = json.loads((folder/'data'/'data_report.json').read_text())
    assert rep['pass_threshold'] == 12, 'the override did not reach the stage'


def test_index_links_notebooks_and_shows_headline_and_inputs(demo_report):
    folder, _ = demo_report
    page = (folder/'index.html').read_text()
    rep = json.loads((folder/'data'/'data_report.json').read_text())
    assert '<a href="01_data_prep.html">html</a>' in page and '<a href="01_data_prep.ipynb">ipynb</a>' in page
    assert f"<th>rows_kept</th><td>{rep['rows_kept']}</td>" in page
    meta = json.loads((folder/'report.json').read_text())['meta']
    assert meta['data_sha256'] == file_sha256(ROOT/'data'/'demo'/'student-demo.csv')
    assert meta['params_sha256'] == file_sha256(ROOT/'params.yaml') and meta['quick'] is True
    assert meta['overrides']['schemas.uci.target.pass_threshold'] == 12


def test_same_inputs_same_numbers(demo_report, tmp_path):
    "A second report of the same configuration replaces the folder and reproduces the outputs byte for byte."
    folder, _ = demo_report
    first = {p.name: p.read_bytes() for p in (folder/'data').iterdir()}
    again, ok = runner.report('demo', 'B', folder.parent, quick=True, sets={'schemas.uci.target.pass_threshold': 12}, stages=['prepare'])
    assert ok and again == folder
    assert {p.name: p.read_bytes() for p in (folder/'data').iterdir()} == first


def test_refuses_a_folder_that_is_not_a_report(tmp_path):
    (tmp_path/'demo-C').mkdir()
    (tmp_path/'demo-C'/'precious.txt').write_text('keep me')
    r = cli('--dataset', 'demo', '--setup', 'C', '--stages', 'prepare', '--out', tmp_path)
    assert r.returncode == 1 and 'is not a report folder' in r.stderr
    assert (tmp_path/'demo-C'/'precious.txt').exists()


def test_failed_stage_is_in_the_index_and_exit_code(tmp_path):
    bad = tmp_path/'other school.csv'
    bad.write_text('name,grade\nann,12\n')
    r = cli('--dataset', bad, '--setup', 'A', '--stages', 'prepare', '--out', tmp_path/'reports')
    assert r.returncode == 1 and "stage 'prepare' failed" in r.stderr and 'missing required column' in r.stderr
    folder = tmp_path/'reports'/'other_school-A'
    st = json.loads((folder/'report.json').read_text())['stages']['prepare']
    assert st['status'] == 'failed' and st['notebook'] == '01_data_prep.ipynb'
    assert 'class="failed"' in (folder/'index.html').read_text() and (folder/'01_data_prep.html').exists()


@pytest.mark.slow
def test_report_on_uci_prepare(uci_dir, tmp_path):
    r = cli('--dataset', 'por', '--setup', 'C', '--stages', 'prepare', '--data-dir', uci_dir, '--out', tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path/'por-C'/'data'/'data_report.json').read_text())['rows_kept'] == 649
    assert (tmp_path/'por-C'/'index.html').exists()


@pytest.mark.slow
def test_full_report_por_setup_c(uci_dir, tmp_path):
    "The issue's acceptance run: every available stage on the Portuguese data, setup C (quick grids)."
    r = cli('--dataset', 'por', '--setup', 'C', '--data-dir', uci_dir, '--out', tmp_path, '--quick')
    assert r.returncode == 0, r.stderr[-3000:]
    folder = tmp_path/'por-C'
    stages = json.loads((folder/'report.json').read_text())['stages']
    assert list(stages) == runner.available_stages() and all(s['status'] == 'ok' for s in stages.values())
    page = (folder/'index.html').read_text()
    for nb in runner.STAGES.values():
        if (ROOT/'nbs'/nb).exists(): assert (folder/nb).with_suffix('.html').exists() and nb.replace('.ipynb', '.html') in page
    if 'evaluate' in stages: assert 'Headline: evaluation (hold-out)' in page and 'figures/model_evaluation_results.png' in page
