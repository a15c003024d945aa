"""`studentperf roster`: the page for teachers, from a demo-data class file and the quick model of `tiny_run`."""
import html, json
from pathlib import Path
import pytest
from studentperf import roster, runner
from studentperf.handoff import load_artifact
from conftest import ROOT

N_VALID, CAPACITY = 20, 4


@pytest.fixture(scope='module')
def class_file(tiny_run, tmp_path_factory):
    "20 demo students with a student_ref (one with HTML in it), a value out of range (line 22) and a short row (line 23)."
    schema = load_artifact(tiny_run/'models').card['input_schema']
    lines = (ROOT/'data'/'demo'/'student-demo.csv').read_text(encoding='utf-8').splitlines()
    head, rows = lines[0].split(';'), [l.split(';') for l in lines[1:N_VALID + 2]]
    num = next(c for c, s in schema.items() if s['kind'] == 'numeric' and 'max' in s)
    rows[N_VALID][head.index(num)] = str(schema[num]['max'] + 1)
    refs = ['S<01>', *(f'S{i:02d}' for i in range(2, N_VALID + 2))]
    body = [';'.join(['student_ref', *head])] + [';'.join([r, *row]) for r, row in zip(refs, rows)] + [';'.join(['S99', *rows[0][:-2]])]
    f = tmp_path_factory.mktemp('class')/'class 7b.csv'
    f.write_text('\n'.join(body) + '\n', encoding='utf-8')
    return f, refs[:N_VALID], num


@pytest.fixture(scope='module')
def page(tiny_run, class_file, tmp_path_factory):
    "One `studentperf roster ... --capacity 4` run (papermill): its folder and stdout."
    out = tmp_path_factory.mktemp('roster')
    r = _main(['roster', str(class_file[0]), '--model', str(tiny_run/'models'), '--capacity', str(CAPACITY), '--out', str(out)])
    assert r[0] == 0, r[2]
    return out, r[1]


def _main(argv):
    import contextlib, io
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try: code = runner.main(argv)
        except SystemExit as x: code = x.code
    return code, o.getvalue(), e.getvalue()


def test_page_holds_every_valid_row_and_the_invalid_ones(page, class_file):
    out, stdout = page
    doc = (out/'roster.html').read_text(encoding='utf-8')
    for ref in class_file[1]: assert f'<td>{html.escape(ref)}</td>' in doc, ref
    assert '<td>S<01></td>' not in doc                                  # file values are escaped
    assert f"Rows read: {N_VALID + 2} = {N_VALID} scored + 2 not scored" in doc
    s = json.loads((out/'roster.json').read_text())
    assert (s['rows_read'], s['valid'], s['invalid']) == (N_VALID + 2, N_VALID, 2)
    bad = {r['line']: r['reason'] for r in s['invalid_rows']}
    assert set(bad) == {N_VALID + 2, N_VALID + 3}
    assert f'{class_file[2]}=' in bad[N_VALID + 2] and 'expected' in bad[N_VALID + 2]
    assert 'fields' in bad[N_VALID + 3]
    for line, reason in bad.items(): assert f"<td class='num'>{line}</td>" in doc and html.escape(reason) in doc
    assert 'roster.html' in stdout and f'rows read {N_VALID + 2}' in stdout
    assert (out/'13_roster.ipynb').exists() and (out/'13_roster.html').exists()   # the record, beside the page
    assert 'data:image/png;base64,' in doc and 'What the model cannot tell' in doc


def test_capacity_flags_exactly_n_and_says_what_the_threshold_would(page):
    out, _ = page
    s = json.loads((out/'roster.json').read_text())
    doc = (out/'roster.html').read_text(encoding='utf-8')
    assert s['rule'] == 'capacity' and s['flagged'] == CAPACITY == doc.count('<span class=flag>flagged</span>')
    assert f"can help {CAPACITY}" in doc and f"{s['flagged_by_threshold']} student" in s['rule_text']
    assert doc.count('&#9650;') >= CAPACITY                               # reasons for each flagged student
    csv = (out/'roster.csv').read_text().splitlines()
    assert len(csv) == N_VALID + 1 and sum(l.split(',')[4] == 'True' for l in csv[1:]) == CAPACITY


def test_threshold_rule_flags_the_students_at_risk(tiny_run, class_file):
    art = load_artifact(tiny_run/'models')
    r = roster.score_class(art, class_file[0])
    ranked, rule = roster.flag_students(r.students, art.threshold)
    assert rule['rule'] == 'threshold' and rule['flagged'] == int((ranked['risk'] >= art.threshold).sum()) == ranked['flagged'].sum()
    assert ranked['risk'].is_monotonic_decreasing


@pytest.mark.parametrize('what', ['missing class', 'garbled class', 'missing model', 'garbled model'])
def test_bad_inputs_give_one_clear_line(what, tiny_run, class_file, tmp_path):
    import shutil
    cls, model = class_file[0], tiny_run/'models'
    if what == 'missing class': cls = tmp_path/'nope.csv'
    if what == 'garbled class': cls = tmp_path/'garbled.csv'; cls.write_bytes(b'\x89PNG\r\n\x1a\n\x00\xff\xfe')
    if what == 'missing model': model = tmp_path/'no-model'
    if what == 'garbled model':
        model = Path(shutil.copytree(load_artifact(model).path, tmp_path/'broken'))
        (model/'model_card.json').write_text('{not json', encoding='utf-8')
    code, out, err = _main(['roster', str(cls), '--model', str(model), '--out', str(tmp_path/'out')])
    assert code == 1 and err.startswith('studentperf: error:') and 'Traceback' not in err, err
    assert (cls.name if 'class' in what else model.name) in err
    assert not (tmp_path/'out').exists()                                 # refused before anything ran


def test_capacity_must_be_a_positive_whole_number(class_file):
    code, _, err = _main(['roster', str(class_file[0]), '--capacity', '0'])
    assert code == 2 and '--capacity' in err
