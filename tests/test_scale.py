"Dask engine (12_scale): the same model with and without a scheduler, distributed scoring with exact counts, a lost worker, a wrong address."
import os, signal, threading, time
from pathlib import Path
import pandas as pd
import pytest
from studentperf import scale
from studentperf.config import load_params
from studentperf.data import read_cleaned
from studentperf.features import split_xy
from studentperf.handoff import predict_file
from studentperf.modeling import holdout_split, train_models
from studentperf.runner import main
from conftest import ROOT

DEMO = ROOT/'data'/'demo'/'student-demo.csv'


@pytest.fixture(scope='module')
def client():
    with scale.connect('local', workers=2) as c: yield c


@pytest.fixture(scope='module')
def demo_rows():
    return pd.read_csv(DEMO, sep=';', dtype=str, keep_default_na=False)


def free_port() -> int:
    import socket
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def write_parts(rows: pd.DataFrame, folder: Path, n: int) -> list:
    "`rows` split into `n` `;`-separated CSV parts; part 1 gets a row with too many fields, a blank line and a bad value."
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder/f'part-{i}.csv'
        rows.iloc[i*len(rows)//n:(i+1)*len(rows)//n].to_csv(p, sep=';', index=False)
        paths.append(p)
    with open(paths[1], 'a') as f:
        f.write(';'.join(rows.iloc[0]) + ';extra\n\n' + ';'.join(rows.iloc[1]).replace('GP', 'XX', 1) + '\n')
    return paths


def single_process(tiny_run, paths, tmp) -> tuple[pd.DataFrame, pd.DataFrame]:
    "What `predict_file` writes for each part, with a `source` column: the reference for the distributed path."
    sc, q = [], []
    for p in paths:
        c = predict_file(tiny_run/'models', p, tmp/f'{p.stem}.scores.csv', progress=False)
        sc.append(pd.read_csv(c['output']).assign(source=str(p.resolve())))
        q.append(pd.read_csv(c['quarantine']).assign(source=str(p.resolve())))
    return pd.concat(sc, ignore_index=True), pd.concat(q, ignore_index=True)


def test_model_search_same_with_and_without_a_scheduler(tiny_run):
    tables = {}
    for sched in (None, 'local'):
        p = load_params(overrides={'run.quick': True, 'model.candidates': ['logreg', 'tree'], 'model.ensembles': ['voting'],
                                   'model.imbalance': ['smote'], 'model.quick.feature_variants': {'default': {}},
                                   'engine.scheduler': sched})   # one seeded resampler, one feature variant: a minute less
        X, y = split_xy(holdout_split(read_cleaned(tiny_run, p), p)[0], p)
        with scale.engine(p) as c:
            assert (c is None) == (sched is None)
            tables[sched] = train_models(X, y, p, progress=False).table
    pd.testing.assert_frame_equal(tables[None], tables['local'])
    assert len(tables[None]) == 4 and tables[None]['selected'].sum() == 1


def test_partitioned_csv_scoring_counts_add_up_and_match_one_process(tiny_run, client, demo_rows, tmp_path):
    paths = write_parts(pd.concat([demo_rows]*3, ignore_index=True), tmp_path/'in', 3)
    ref, ref_q = single_process(tiny_run, paths, tmp_path)
    c = scale.predict_distributed(tiny_run/'models', tmp_path/'in', tmp_path/'out', client, fmt='csv', blocksize='16KiB', progress=False)
    assert c['partitions'] > c['files'] == 3                        # several blocks per file
    assert (c['rows_read'], c['rows_scored'], c['rows_quarantined']) == (len(ref) + len(ref_q), len(ref), len(ref_q))
    assert c['rows_read'] == 3*len(demo_rows) + 2                   # + the wrong-width row and the bad value; the blank line is no row
    out = pd.concat([pd.read_csv(p) for p in sorted((tmp_path/'out'/'scores').glob('part-*.csv'))], ignore_index=True)
    key = ['source', 'line']
    got, want = out.sort_values(key).reset_index(drop=True), ref.sort_values(key).reset_index(drop=True)
    pd.testing.assert_series_equal(got['line'], want['line'])
    pd.testing.assert_series_equal(got['probability_pass'], want['probability_pass'], rtol=1e-12)
    assert (got['risk_band'] == want['risk_band']).all()
    q = pd.read_csv(tmp_path/'out'/'quarantine.csv')
    assert sorted(zip(q['source'], q['line'], q['quarantine_reason'])) == sorted(zip(ref_q['source'], ref_q['line'], ref_q['quarantine_reason']))
    assert any(r.startswith('expected ') and r.endswith(f'found {len(demo_rows.columns) + 1}') for r in q['quarantine_reason'])
    assert any(r.startswith("school='XX'") for r in q['quarantine_reason'])
    counts = pd.read_json(tmp_path/'out'/'counts.json', typ='series')
    assert counts['rows_read'] == c['rows_read'] and counts['model_version'] == c['model_version']
    assert not list(tmp_path.glob('.out.*'))                        # no temporary folder left behind


def test_parquet_parts_scored_by_row_group(tiny_run, client, demo_rows, tmp_path):
    df = demo_rows.copy()
    df['age'] = pd.to_numeric(df['age']).astype('Int64')            # typed columns, as a warehouse export has them
    df.loc[5, 'age'] = 99                                           # out of range: quarantined, with its row number
    (tmp_path/'in').mkdir()
    half = len(df)//2
    df.iloc[:half].to_parquet(tmp_path/'in'/'a.parquet', row_group_size=100)
    df.iloc[half:].to_parquet(tmp_path/'in'/'b.parquet', row_group_size=100)
    c = scale.predict_distributed(tiny_run/'models', tmp_path/'in'/'*.parquet', tmp_path/'out', client, progress=False)
    assert c['input_kind'] == 'parquet' and c['partitions'] == -(-half//100) + -(-(len(df) - half)//100)
    assert c['rows_read'] == len(df) == c['rows_scored'] + c['rows_quarantined']
    scores = pd.read_parquet(tmp_path/'out'/'scores')
    assert len(scores) == c['rows_scored'] and scores['probability_pass'].between(0, 1).all()
    q = pd.read_csv(tmp_path/'out'/'quarantine.csv')
    assert ((q['line'] == 6) & q['source'].str.endswith('a.parquet') & q['quarantine_reason'].str.contains('age=99')).any()


def test_a_failed_job_writes_nothing(tiny_run, client, demo_rows, tmp_path):
    paths = write_parts(demo_rows, tmp_path/'in', 2)
    scale.predict_distributed(tiny_run/'models', tmp_path/'in', tmp_path/'out', client, progress=False)   # an earlier output
    before = (tmp_path/'out'/'counts.json').read_text()
    with open(paths[0], 'ab') as f: f.write(b'GP;F;\xff\n')       # not UTF-8: the task fails for good
    with pytest.raises(Exception, match='not UTF-8'):
        scale.predict_distributed(tiny_run/'models', tmp_path/'in', tmp_path/'out', client, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['in', 'out']          # no temporary folder left
    assert (tmp_path/'out'/'counts.json').read_text() == before                 # the earlier output is untouched
    paths[0].write_text(paths[1].read_text())                                  # a good input again
    (tmp_path/'other').mkdir(); (tmp_path/'other'/'notes.txt').write_text('not ours')
    with pytest.raises(scale.ScoringError, match='not an earlier scoring output'):   # never replaces a folder it did not write
        scale.predict_distributed(tiny_run/'models', tmp_path/'in', tmp_path/'other', client, progress=False)
    with pytest.raises(scale.ScoringError, match='holds input files'):
        scale.predict_distributed(tiny_run/'models', tmp_path/'in', tmp_path, client, progress=False)
    assert (tmp_path/'other'/'notes.txt').exists() and all(p.exists() for p in paths)


def test_odd_file_names_and_quoted_line_breaks(tiny_run, client, demo_rows, tmp_path):
    paths = write_parts(demo_rows, tmp_path/'in', 2)
    paths[0].rename(tmp_path/'in'/'part[0].csv')                               # glob characters in a name: still read, once
    c = scale.predict_distributed(tiny_run/'models', tmp_path/'in', tmp_path/'out', client, progress=False)
    assert c['files'] == 2 and c['rows_read'] == len(demo_rows) + 2
    assert set(pd.read_parquet(tmp_path/'out'/'scores')['source'].map(lambda s: Path(s).name)) == {'part[0].csv', 'part-1.csv'}
    c2 = scale.predict_distributed(tiny_run/'models', tmp_path/'in', tmp_path/'out', client, progress=False)   # replaces its own output
    assert c2['rows_read'] == c['rows_read']
    with open(paths[1], 'a') as f: f.write('GP;"F;17\n')                      # an open quote: a field that would run into the next block
    with pytest.raises(Exception, match='quoted field holds a line break'):
        scale.predict_distributed(tiny_run/'models', tmp_path/'in', tmp_path/'out2', client, progress=False)


def test_a_worker_killed_mid_job_is_retried_and_the_output_is_complete(tiny_run, demo_rows, tmp_path):
    rows = pd.concat([demo_rows]*30, ignore_index=True)
    write_parts(rows, tmp_path/'in', 2)
    res, err = {}, []
    with scale.connect('local', workers=2) as c:
        pids = c.run(os.getpid)
        def job():
            try: res.update(scale.predict_distributed(tiny_run/'models', tmp_path/'in', tmp_path/'out', c, blocksize='32KiB', progress=False))
            except Exception as e: err.append(e)
        t = threading.Thread(target=job); t.start()
        deadline = time.time() + 120
        while not list(tmp_path.glob('.out.tmp-*/scores/part-*')) and time.time() < deadline and t.is_alive(): time.sleep(0.05)
        assert t.is_alive(), f'the job ended before a worker could be killed: {err or res}'
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        t.join(300)
    assert not err, err
    assert res['rows_read'] == len(rows) + 2 == res['rows_scored'] + res['rows_quarantined']
    parts = sorted((tmp_path/'out'/'scores').glob('*'))
    assert len(parts) == res['partitions'] and all(p.name.startswith('part-') for p in parts)
    lines = pd.concat([pd.read_parquet(p, columns=['source', 'line']) for p in parts])
    assert len(lines) == res['rows_scored'] and not lines.duplicated().any()


def test_scheduler_switch_on_the_command_line(tiny_run, demo_rows, tmp_path, capsys):
    dead = f'tcp://127.0.0.1:{free_port()}'
    assert main(['run', '--stages', 'model', '--quick', '--out', str(tmp_path/'o'), '--scheduler', dead]) == 1
    assert f'no Dask scheduler at {dead}' in capsys.readouterr().err
    assert not (tmp_path/'o').exists()                              # refused before any stage ran
    write_parts(demo_rows, tmp_path/'in', 2)
    assert main(['predict', str(tmp_path/'in'), '-o', str(tmp_path/'s'), '--model', str(tiny_run/'models'), '--scheduler', dead]) == 1
    assert f'no Dask scheduler at {dead}' in capsys.readouterr().err
    assert main(['predict', str(tmp_path/'in'), '-o', str(tmp_path/'s'), '--model', str(tiny_run/'models')]) == 1
    assert 'add --scheduler local' in capsys.readouterr().err
    assert main(['run', '--stages', 'model', '--quick', '--set', 'engine.scheduler=udp://x']) == 1
    assert 'engine.scheduler' in capsys.readouterr().err
    assert main(['predict', str(tmp_path/'in'), '-o', str(tmp_path/'s'), '--model', str(tiny_run/'models'), '--scheduler', 'local',
                 '--format', 'csv']) == 0
    out = capsys.readouterr().out
    assert f'rows_read {len(demo_rows) + 2}, rows_scored' in out and 'not recorded in the prediction log' in out
    assert len(list((tmp_path/'s'/'scores').glob('part-*.csv'))) == 2
