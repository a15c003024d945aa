"The runner: stages run their notebooks with papermill, parameters override params.yaml, outputs add up."
import json, subprocess, sys
from pathlib import Path
import nbformat
import pytest
from studentperf import runner
from conftest import ROOT, cli_here

CLI = [str(Path(sys.executable).parent/'studentperf')]


@pytest.mark.parametrize('nb', sorted(runner.STAGES.values()))
def test_stage_notebooks_keep_their_parameters_tag(nb):
    "papermill injects after the cell tagged `parameters`; without the tag the notebook's defaults win silently."
    path = ROOT/'nbs'/nb
    if not path.exists(): pytest.skip(f'{nb} is not written yet')
    tagged = [c for c in nbformat.read(path, as_version=4).cells if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(tagged) == 1 and {'params_file', 'overrides', 'out_dir'} <= set(tagged[0].source.replace('=', ' ').split())


def test_papermill_parameters_override_params_yaml(tmp_path, capfd):
    "Fails if the tag is lost: the defaults would reset out_dir and the overrides after papermill's injection."
    nb = runner.run_stage('prepare', tmp_path, {'schemas.uci.target.pass_threshold': 14, 'data.missing': 'quarantine'})
    assert 'without encryption' not in capfd.readouterr().err   # the kernel talks over IPC (config.local_kernel): a quiet run
    rep = json.loads((tmp_path/'data'/'data_report.json').read_text())
    assert (rep['pass_threshold'], rep['missing_rule'], rep['dataset']) == (14, 'quarantine', 'demo')
    # 2 invalid rows + 30 rows with a gap + 2 duplicates of rows with a gap (validation comes before de-duplication)
    assert (rep['rows_quarantined'], rep['duplicates_removed'], rep['rows_kept']) == (34, 42, 590)
    assert rep['rows_raw'] == rep['rows_kept'] + rep['duplicates_removed'] + rep['rows_quarantined']
    injected = [c for c in nbformat.read(nb, as_version=4).cells if 'injected-parameters' in c.metadata.get('tags', [])]
    assert len(injected) == 1 and 'pass_threshold' in injected[0].source
    assert nb.with_suffix('.html').exists()


@pytest.mark.parametrize('subject,n', [pytest.param('por', 649, marks=pytest.mark.slow), ('mat', 395)])   # por: also in por_c_run
def test_cli_prepare_on_uci(uci_dir, tmp_path, subject, n):
    r = subprocess.run(CLI + ['run', '--stages', 'prepare', '--dataset', subject, '--data-dir', str(uci_dir), '--out', str(tmp_path)],
                       capture_output=True, text=True, cwd='/')
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path/'data'/'data_report.json').read_text())
    assert rep['rows_kept'] == n and rep['rows_raw'] == rep['rows_kept'] + rep['duplicates_removed'] + rep['rows_quarantined']
    assert (tmp_path/'data'/'student_performance_cleaned.csv').exists() and (tmp_path/'data'/'quarantine.csv').exists()
    assert (tmp_path/'reports'/'01_data_prep.html').exists() and str(tmp_path) in r.stdout


def test_cli_missing_data_dir_says_how_to_get_it(tmp_path, capsys):
    r = cli_here(capsys, 'run', '--stages', 'prepare', '--dataset', 'mat', '--data-dir', tmp_path/'nope', '--out', tmp_path)
    assert r.returncode == 1 and 'studentperf data fetch' in r.stderr and 'STUDENTPERF_DATA_DIR' in r.stderr


def test_cli_refuses_unknown_parameter_and_stage(tmp_path, capsys):
    r = cli_here(capsys, 'run', '--set', 'target.pass_treshold=12', '--out', tmp_path)
    assert r.returncode == 1 and "unknown parameter 'target.pass_treshold'" in r.stderr
    r = cli_here(capsys, 'run', '--stages', 'train', '--out', tmp_path)
    assert r.returncode == 1 and 'unknown stage(s) train' in r.stderr


def test_readme_is_generated_from_index():
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
