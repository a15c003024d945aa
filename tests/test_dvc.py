"""The DVC pipeline (dvc.yaml), in a temporary git copy of the project with `run.quick: true`.

`dvc repro` runs the stages whose notebooks exist; a second `dvc repro` does nothing; a one-parameter change reruns
only the stages that read that parameter; `dvc metrics show` prints the metrics once the model stage exists.
Stages whose notebook is not written yet are skipped (their targets are left out)."""
import json, os, re, shutil, subprocess, sys, tempfile
from contextlib import contextmanager
from pathlib import Path
import pytest, yaml
from conftest import ROOT

BIN = Path(sys.executable).parent
DVC = BIN/'dvc'

IGNORE = shutil.ignore_patterns('.git', '.venv', 'outputs', 'reports', '_proc', '_docs', '.pytest_cache', '__pycache__',
                                '*.egg-info', '.ipynb_checkpoints', 'cache', 'tmp', 'dvc.lock', 'build', 'dist')


def stages_available(root: Path) -> list:
    "dvc.yaml's stages whose notebook exists, in pipeline order."
    spec = yaml.safe_load((root/'dvc.yaml').read_text())['stages']
    return [s for s, d in spec.items() if all((root/p).exists() for p in d['deps'] if str(p).startswith('nbs/'))]


def sh(args, cwd, env, check=True):
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check: assert r.returncode == 0, f"{' '.join(map(str, args))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def set_param(path: Path, pattern: str, new: str):
    "Change one line of params.yaml (a regex on the text keeps the comments and the other keys as they are)."
    text = path.read_text()
    changed, n = re.subn(pattern, new, text, count=1, flags=re.M)
    assert n == 1, f'{pattern!r} not found in {path}'
    path.write_text(changed)


@contextmanager
def restored(d: Path):
    "Put params.yaml, dvc.lock and outputs/ back as they were afterwards, so each test starts from the same pipeline state."
    keep = Path(tempfile.mkdtemp())
    shutil.copy2(d/'params.yaml', keep/'params.yaml'); shutil.copy2(d/'dvc.lock', keep/'dvc.lock')
    shutil.copytree(d/'outputs', keep/'outputs')
    try: yield
    finally:
        shutil.copy2(keep/'params.yaml', d/'params.yaml'); shutil.copy2(keep/'dvc.lock', d/'dvc.lock')
        shutil.rmtree(d/'outputs'); shutil.copytree(keep/'outputs', d/'outputs')
        shutil.rmtree(keep)


@pytest.fixture(scope='module')
def repo(tmp_path_factory):
    "A git copy of the project (no network), quick parameters; env runs the copy's package and the venv's tools."
    d = tmp_path_factory.mktemp('dvc')/'studentperf'
    shutil.copytree(ROOT, d, ignore=IGNORE)
    set_param(d/'params.yaml', r'^(  quick:\s*)false', r'\g<1>true')   # run.quick (the first `  quick:` key)
    assert yaml.safe_load((d/'params.yaml').read_text())['run']['quick'] is True
    env = {**os.environ, 'PATH': f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", 'PYTHONPATH': str(d),
           'DVC_NO_ANALYTICS': '1', 'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@example.invalid',
           'GIT_COMMITTER_NAME': 't', 'GIT_COMMITTER_EMAIL': 't@example.invalid'}
    sh(['git', 'init', '-q', '-b', 'main'], d, env)
    sh(['git', 'add', '-A'], d, env)
    sh(['git', 'commit', '-q', '-m', 'copy'], d, env)
    stages = stages_available(d)
    assert stages[:1] == ['prepare'], stages
    targets = [s for s in stages if s in ('prepare', 'features')]   # the fast stages; model/evaluate below
    first = sh([str(DVC), 'repro', *targets], d, env)
    sh(['git', 'add', 'dvc.lock'], d, env)                      # as a team does: the lock file is committed
    sh(['git', 'commit', '-q', '-m', 'dvc.lock'], d, env)
    return dict(path=d, env=env, stages=stages, targets=targets, first=first.stdout)


def test_config_analytics_off_and_default_remote():
    cfg = (ROOT/'.dvc'/'config').read_text()
    assert re.search(r'analytics\s*=\s*false', cfg) and re.search(r'remote\s*=\s*storage', cfg)
    assert (ROOT/'.dvc'/'.gitignore').read_text().split() == ['/config.local', '/tmp', '/cache']


def test_every_stage_runs_its_notebook_with_the_runner():
    "One stage per stage notebook of the runner, each `studentperf run --stages NAME --out outputs` with its notebook as a dep."
    from studentperf.runner import STAGES
    spec = yaml.safe_load((ROOT/'dvc.yaml').read_text())['stages']
    for name, d in spec.items():
        assert d['cmd'] == f'studentperf run --stages {name} --out outputs'
        assert f'nbs/{STAGES[name]}' in d['deps'] and any(str(p).startswith('studentperf/') for p in d['deps'])
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in d['outs']]
        assert all(o.startswith('outputs/') for o in outs) and f"outputs/reports/{STAGES[name]}" in outs
    assert {'prepare', 'features', 'model', 'evaluate'} <= set(spec)


def test_repro_runs_then_second_repro_is_a_no_op(repo):
    d, env = repo['path'], repo['env']
    for s in repo['targets']: assert f"Running stage '{s}'" in repo['first']
    assert (d/'outputs/data/student_performance_cleaned.csv').exists() and 'prepare' in (d/'dvc.lock').read_text()
    rep = json.loads((d/'outputs/data/data_report.json').read_text())
    assert rep['rows_raw'] == rep['rows_kept'] + rep['duplicates_removed'] + rep['rows_quarantined']
    again = sh([str(DVC), 'repro', *repo['targets']], d, env).stdout
    assert 'Running stage' not in again, again
    for s in repo['targets']: assert f"Stage '{s}' didn't change, skipping" in again
    st = sh([str(DVC), 'status', *repo['targets']], d, env).stdout
    assert 'up to date' in st, st
    # outputs stay out of git
    assert sh(['git', 'status', '--porcelain', '--', 'outputs'], d, env).stdout == ''


def test_push_and_pull_through_the_default_remote(repo, tmp_path):
    "The team workflow: `dvc push` to the remote (here overridden per machine with --local), `dvc pull` restores outputs."
    d, env = repo['path'], repo['env']
    sh([str(DVC), 'remote', 'modify', '--local', 'storage', 'url', str(tmp_path/'remote')], d, env)
    sh([str(DVC), 'push', *repo['targets']], d, env)     # every target: later tests need the whole cache back
    f = d/'outputs/data/student_performance_cleaned.csv'
    data = f.read_bytes()
    f.unlink(); shutil.rmtree(d/'.dvc'/'cache')
    sh([str(DVC), 'pull', *repo['targets']], d, env)
    assert f.read_bytes() == data
    assert sh(['git', 'status', '--porcelain', '--', '.dvc'], d, env).stdout == ''     # config.local stays out of git


def stale(repo) -> set:
    "Stages `dvc status` reports as changed."
    out = sh([str(DVC), 'status', '--json'], repo['path'], repo['env']).stdout
    return set(json.loads(out or '{}'))


@pytest.mark.parametrize('pattern,new,first', [
    (r'^(  scaler:\s*)standard', r'\g<1>minmax', 'features'),            # features.scaler
    (r'^(\s+pass_threshold:\s*)10', r'\g<1>12', 'prepare'),             # schemas.uci.target.pass_threshold
    (r'^(  cv_folds:\s*)5', r'\g<1>4', 'model'),                          # model.cv_folds
    (r'^(  calibration_bins:\s*)10', r'\g<1>8', 'evaluate'),              # evaluate.calibration_bins
])
def test_a_parameter_marks_only_the_stages_that_read_it(repo, pattern, new, first):
    "DVC's view after editing one parameter: the stages that read it become stale, the stages before stay up to date."
    d = repo['path']
    order = ['prepare', 'features', 'model', 'evaluate']
    if first not in repo['stages']: pytest.skip(f'the {first} stage has no notebook yet')
    before_text, stale_before = (d/'params.yaml').read_text(), stale(repo)
    try:
        set_param(d/'params.yaml', pattern, new)
        newly = (stale(repo) - stale_before) & set(repo['stages'])
        upstream = set(order[:order.index(first)])
        assert not (stale(repo) - stale_before) & upstream, f'{newly}: upstream stages must stay up to date'
        if first not in stale_before: assert first in newly, newly
        if first in repo['targets']:
            dry = sh([str(DVC), 'repro', '--dry', *repo['targets']], d, repo['env']).stdout
            for s in repo['targets'][:repo['targets'].index(first)]: assert f"Stage '{s}' didn't change, skipping" in dry, dry
            assert f"Running stage '{first}'" in dry, dry
    finally: (d/'params.yaml').write_text(before_text)


def test_exp_run_a_variant_reruns_only_what_changed(repo):
    """`dvc exp run -S`: a parameter of the data stage that does not change the cleaned table (the download URL) reruns
    the data stage; the features stage is skipped because its inputs' content did not change. DVC rewrites params.yaml
    (YAML 1.2, `yes`/`no` unquoted), so this also fails if load_params reads `yes` as a boolean."""
    d, env = repo['path'], repo['env']
    with restored(d):
        out = sh([str(DVC), 'exp', 'run', *repo['targets'], '-n', 'other-url', '-S', 'data.fetch.url=file:///nowhere/uci.zip'], d, env).stdout
        assert "Running stage 'prepare'" in out, out
        if 'features' in repo['targets']: assert "Stage 'features' didn't change, skipping" in out, out
        assert 'other-url' in sh([str(DVC), 'exp', 'list', '--name-only'], d, env).stdout
        assert 'data.fetch.url' in sh([str(DVC), 'params', 'diff'], d, env).stdout


def test_one_parameter_change_reruns_only_the_features_stage(repo):
    """A real rerun after `features.scaler: minmax`: prepare is skipped, features reruns and uses the new value.
    The stage notebook runs its own test cells, so it fails if they assume a value of params.yaml instead of pinning it."""
    d, env = repo['path'], repo['env']
    if 'features' not in repo['targets']: pytest.skip('02_features.ipynb is not written yet')
    with restored(d):
        set_param(d/'params.yaml', r'^(  scaler:\s*)standard', r'\g<1>minmax')
        diff = sh([str(DVC), 'params', 'diff'], d, env).stdout
        assert 'features.scaler' in diff and 'minmax' in diff, diff
        try:
            out = sh([str(DVC), 'repro', *repo['targets']], d, env).stdout
        except AssertionError as e:
            raise AssertionError(f"{e}\n-> A DVC variant edits params.yaml, so a stage notebook's test cells must not assume a "
                                 "value of params.yaml: pin what they assert with load_params(overrides={...}).") from None
        assert "Stage 'prepare' didn't change, skipping" in out and "Running stage 'features'" in out, out
        man = json.loads((d/'outputs/data/feature_manifest.json').read_text())
        assert man['choices']['scaler'] == 'minmax', 'the rerun did not use the changed parameter'


@pytest.mark.slow
def test_metrics_show_after_model_and_evaluate(repo):
    d, env = repo['path'], repo['env']
    later = [s for s in ('model', 'evaluate', 'handoff') if s in repo['stages']]
    if not later: pytest.skip('03_modeling.ipynb is not written yet: no metrics to show')
    sh([str(DVC), 'repro', *later], d, env)
    out = sh([str(DVC), 'metrics', 'show'], d, env).stdout
    assert 'outputs/metrics/train_metrics.json' in out, out
    assert 'Running stage' not in sh([str(DVC), 'repro'], d, env).stdout   # the whole pipeline is up to date
    if 'evaluate' in later:
        assert 'outputs/metrics/eval_metrics.json' in out, out
        sh([str(DVC), 'plots', 'show', '-o', str(d/'dvc_plots')], d, env)
        assert (d/'dvc_plots'/'index.html').exists()
