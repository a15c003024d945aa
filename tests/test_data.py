"Data preparation: loaders, validation, quarantine, duplicates, missing values, the demo generator, fetching."
import io, zipfile
import pandas as pd
import pytest
from studentperf import data
from studentperf.config import load_params
from conftest import cli_here


def demo_rows(params, n=6):
    "The first `n` complete, distinct rows of the demo file, as strings."
    d = pd.read_csv(data.demo_path(params), sep=';', dtype=str, keep_default_na=False)
    return d[~d.duplicated() & (d != '').all(axis=1)].head(n).reset_index(drop=True)


def write(tmp_path, df, sep=';', eol='\n', name='t.csv'):
    p = tmp_path/name
    p.write_bytes((eol.join([sep.join(df.columns)] + [sep.join(r) for r in df.values]) + eol).encode())
    return p


@pytest.mark.parametrize('subject,n,pass_rate', [('mat', 395, 0.6709), ('por', 649, 0.8459)])
def test_uci_files_load(params, uci_dir, subject, n, pass_rate):
    c = data.load_dataset(params, subject, uci_dir)
    r = c.report
    assert (r['rows_raw'], r['rows_kept'], r['duplicates_removed'], r['rows_quarantined']) == (n, n, 0, 0)
    assert r['pass_rate'] == pass_rate
    assert r['target_counts']['pass'] + r['target_counts']['fail'] == n
    # the Mathematics file quotes G1 and G2; they must still be integers
    assert all(str(c.data[g].dtype) == 'Int64' for g in ('age', 'Medu', 'absences', 'G1', 'G2', 'G3'))
    assert all(str(c.data[s].dtype) == 'str' for s in ('school', 'Mjob', 'higher'))
    assert c.data['G1'].between(0, 20).all()


def test_duplicates_and_missing_counted_exactly(params, tmp_path):
    d = demo_rows(params)
    d = pd.concat([d, d.iloc[[0, 1]], d.iloc[[0]]], ignore_index=True)   # 3 duplicate rows
    d.loc[2, 'Medu'] = ''; d.loc[3, 'absences'] = 'NA'; d.loc[3, 'Fjob'] = ''   # 3 missing cells in 2 rows
    r = data.clean_table(write(tmp_path, d), params).report
    assert (r['rows_raw'], r['rows_kept'], r['duplicates_removed'], r['rows_quarantined']) == (9, 6, 3, 0)
    assert r['missing_imputed'] == 3 and r['missing_by_column'] == {'Medu': 1, 'Fjob': 1, 'absences': 1}
    rq = data.clean_table(write(tmp_path, d), load_params(overrides={'data.missing': 'quarantine'})).report
    assert (rq['rows_kept'], rq['rows_quarantined'], rq['missing_imputed']) == (4, 2, 0)


@pytest.mark.parametrize('col,value,reason', [
    ('Mjob', 'astronaut', "Mjob='astronaut': expected one of ['teacher', 'health', 'services', 'at_home', 'other']"),
    ('G3', '21', 'G3=21: expected between 0 and 20'),
    ('G1', '-1', 'G1=-1: expected between 0 and 20'),
    ('age', '17.5', 'age=17.5: expected a whole number'),
    ('studytime', 'lots', "studytime='lots' is not a number"),
    ('G3', '', 'G3 is missing'),
])
def test_bad_values_are_quarantined_with_line_and_reason(params, tmp_path, col, value, reason):
    d = demo_rows(params)
    d.loc[3, col] = value
    c = data.clean_table(write(tmp_path, d), params)
    assert c.quarantine[['line', 'quarantine_reason']].values.tolist() == [[5, reason]]   # header is line 1
    assert c.quarantine.loc[0, col] == value                                              # the original value is kept
    assert (c.report['rows_kept'], c.report['rows_quarantined']) == (5, 1)


def test_short_row_is_quarantined(params, tmp_path):
    p = write(tmp_path, demo_rows(params))
    lines = p.read_text().splitlines(); lines[2] = lines[2].rsplit(';', 1)[0]
    p.write_text('\n'.join(lines) + '\n')
    c = data.clean_table(p, params)
    assert c.quarantine[['line', 'quarantine_reason']].values.tolist() == [[3, 'expected 33 fields, found 32']]


def test_file_level_errors_are_clear(params, tmp_path):
    d = demo_rows(params)
    cases = {
        'missing column': (write(tmp_path, d.drop(columns=['G3', 'sex']), name='m.csv'), 'missing required column(s) sex, G3'),
        'wrong delimiter': (write(tmp_path, d, sep='|', name='w.csv'), 'could not find a delimiter'),
        'not utf-8': (tmp_path/'latin.csv', 'not UTF-8 text (byte 0xe9'),
        'empty': (tmp_path/'empty.csv', 'the file is empty'),
    }
    cases['not utf-8'][0].write_bytes(write(tmp_path, d, name='l.csv').read_bytes().replace(b'course', b'cours\xe9'))
    cases['empty'][0].write_bytes(b'\n  \n')
    for what, (path, msg) in cases.items():
        with pytest.raises(data.DataError) as e: data.clean_table(path, params)
        assert str(path) in str(e.value) and msg in str(e.value), what


def test_comma_and_crlf_read_like_the_uci_format(params, tmp_path):
    d = demo_rows(params)
    a = data.clean_table(write(tmp_path, d, name='a.csv'), params).data
    b = data.clean_table(write(tmp_path, d, sep=',', eol='\r\n', name='b.csv'), params).data
    pd.testing.assert_frame_equal(a, b)


def test_demo_generator_is_deterministic_and_matches_the_committed_file(params, tmp_path):
    kw = data.demo_kwargs(params)
    a, b = data.write_demo(tmp_path/'a.csv', **kw), data.write_demo(tmp_path/'b.csv', **kw)
    assert a.read_bytes() == b.read_bytes() == data.demo_path(params).read_bytes()
    assert data.write_demo(tmp_path/'c.csv', **{**kw, 'seed': 7}).read_bytes() != a.read_bytes()


def test_demo_data_has_what_real_exports_have(params):
    r = data.load_dataset(params, 'demo').report
    assert (r['rows_raw'], r['duplicates_removed'], r['rows_quarantined'], r['missing_imputed']) == (666, 44, 2, 30)
    assert 0.65 <= r['pass_rate'] <= 0.86   # between the real Mathematics (0.67) and Portuguese (0.85) pass rates


def test_fetch_cli_verifies_checksums_offline(params, uci_dir, tmp_path, capsys):
    "Build an archive shaped like the UCI download from the local files, and fetch it from a file:// URL."
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, 'w') as z:
        for f in ('student-mat.csv', 'student-por.csv', 'student.txt'): z.write(uci_dir/f, f)
    arc = tmp_path/'student+performance.zip'
    with zipfile.ZipFile(arc, 'w') as z: z.writestr('student.zip', inner.getvalue())
    r = cli_here(capsys, 'data', 'fetch', '--url', arc.as_uri(), '--dest', tmp_path/'got')
    assert r.returncode == 0, r.stderr
    assert 'student-por.csv: verified' in r.stdout
    assert data.file_sha256(tmp_path/'got'/'student-mat.csv') == params['data']['fetch']['files']['student-mat.csv']
    # a tampered file is refused and nothing is written
    tampered = tmp_path/'bad.zip'
    with zipfile.ZipFile(tampered, 'w') as z:
        z.writestr('student-mat.csv', (uci_dir/'student-mat.csv').read_bytes() + b'\n'); z.write(uci_dir/'student-por.csv', 'student-por.csv')
    r = cli_here(capsys, 'data', 'fetch', '--url', tampered.as_uri(), '--dest', tmp_path/'bad')
    assert r.returncode == 1 and 'student-mat.csv has SHA-256' in r.stderr and not (tmp_path/'bad').exists()
