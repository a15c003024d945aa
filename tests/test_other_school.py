"""Another school's export, end to end: a schema block with other columns, count columns and a three-level categorical
outcome (`schemas.district2` in params.yaml, the synthetic file data/demo/other-school.csv) goes through every stage,
is served, and scores a batch. Also the clear errors a wrong schema block gets before anything runs."""
import json
from pathlib import Path
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from studentperf import data, handoff, runner
from studentperf.config import ParamsError, load_params
from studentperf.data import run_prepare, read_cleaned
from studentperf.features import run_features
from studentperf.modeling import run_model
from studentperf.evaluation import run_evaluate
from studentperf.handoff import run_handoff
from studentperf.serving import create_app
from conftest import ROOT, TINY, STUDENT

# The other school's demo export: its schema, its only setup, and the make-up of the committed synthetic file
# (the index notebook's "Another school's export" regenerates it with these overrides).
OTHER = {'schema': 'district2', 'run.setup': 'all', 'data.demo_file': 'data/demo/other-school.csv', 'data.demo_rows': 300,
         'data.demo_invalid': 3, 'data.demo_duplicates': 6, 'data.demo_missing_cells': 10}
ONE = {'gender': 'F', 'StageID': 'MiddleSchool', 'Topic': 'IT', 'Semester': 'S', 'Relation': 'Mum', 'raisedhands': 40,
       'VisITedResources': 55, 'AnnouncementsView': 20, 'Discussion': 30, 'ParentAnsweringSurvey': 'Yes',
       'ParentschoolSatisfaction': 'Good', 'StudentAbsenceDays': 'Under-7'}


@pytest.fixture(scope='module')
def other_run(tmp_path_factory):
    "Every stage on the other school's export, quick, logistic regression only: `(params, output folder)`."
    p, out = load_params(overrides={**TINY, **OTHER}), tmp_path_factory.mktemp('other_school')
    run_prepare(p, out); run_features(p, out); run_model(p, out, progress=False); run_evaluate(p, out); run_handoff(p, out)
    return p, out


def test_the_committed_export_is_what_the_generator_writes(tmp_path):
    p = load_params(overrides=OTHER)
    assert data.write_demo(tmp_path/'o.csv', **data.demo_kwargs(p)).read_bytes() == data.demo_path(p).read_bytes()
    assert data.demo_path(p).stat().st_size < 100_000


def test_all_stages_run_on_the_other_school(other_run):
    p, out = other_run
    rep = json.loads((out/'data'/'data_report.json').read_text())
    assert (rep['schema'], rep['delimiter'], rep['target']) == ('district2', ',', 'at risk = Class in [L]')
    assert rep['rows_raw'] == rep['rows_kept'] + rep['duplicates_removed'] + rep['rows_quarantined'] == 309
    assert (rep['duplicates_removed'], rep['rows_quarantined'], rep['missing_imputed']) == (6, 3, 10)
    assert rep['target_counts']['fail'] == rep['label_counts']['L'] and 'band_counts' not in rep and 'pass_threshold' not in rep
    cleaned = read_cleaned(out, p)
    assert 'grade_band' not in cleaned and set(cleaned['Class']) == {'L', 'M', 'H'}
    assert ((cleaned['Class'] == 'L') == (cleaned['pass'] == 0)).all()
    man = json.loads((out/'data'/'feature_manifest.json').read_text())
    assert 'Class' not in man['input_columns'] and {'engagement', 'hands_band', 'parent_answers'} <= {f['name'] for f in man['features']}
    assert man['choices']['skew_columns'] == ['Discussion']
    ev = json.loads((out/'metrics'/'eval_metrics.json').read_text())
    assert ev['roc_auc'] > 0.6                                           # the outcome depends on the counts: learnable
    assert {g.split('=')[0] for g in ev['groups']['default']} == {'gender', 'StageID'}
    card = handoff.load_artifact(out/'models').card
    assert card['setup'] == 'all' and card['target'] == {'label_column': 'Class', 'at_risk_labels': ['L']}
    assert set(card['input_schema']) == set(ONE)
    assert '| target | at risk = Class in [L]; the model outputs P(pass) |' in (handoff.load_artifact(out/'models').path/'model_card.md').read_text()


def test_the_other_school_is_served_with_its_own_columns(other_run):
    p, out = other_run
    with TestClient(create_app(out/'models', p)) as c:
        r = c.post('/predict', json=ONE)
        assert r.status_code == 200, r.text
        assert 0 <= r.json()['probability_pass'] <= 1
        assert c.post('/predict', json={**ONE, 'failures': 0}).status_code == 422    # a UCI column is not this model's input
        assert c.post('/predict', json=STUDENT).status_code == 422                   # nor a UCI student
        assert set(c.get('/openapi.json').json()['components']['schemas']['Student']['properties']) == {*ONE, 'student_ref'}


def test_a_batch_of_the_other_school_is_scored_with_counts_that_add_up(other_run, tmp_path):
    p, out = other_run
    src = tmp_path/'class.csv'
    rows = pd.read_csv(ROOT/'data'/'demo'/'other-school.csv', dtype=str, keep_default_na=False).drop(columns='Class').head(40)
    rows.loc[3, 'raisedhands'] = '250'                                          # out of range: quarantined, not dropped
    rows.to_csv(src, index=False)
    assert runner.main(['predict', str(src), '-o', str(tmp_path/'scored.csv'), '--model', str(out/'models')]) == 0   # `studentperf predict`
    scored, q = pd.read_csv(tmp_path/'scored.csv'), pd.read_csv(tmp_path/'scored.quarantine.csv')
    assert len(scored) + len(q) == 40 and len(q) >= 1 and 'raisedhands' in q['quarantine_reason'].iloc[0]
    assert scored['probability_pass'].between(0, 1).all()


# --- the clear errors: refused at load (params) or when the file is read (data), before anything runs ---

def test_a_target_column_missing_from_the_schema_is_refused():
    with pytest.raises(ParamsError, match=r"schemas.district2.target.label_column = 'Grade': no such column: expected columns of schema 'district2'"):
        load_params(overrides={**OTHER, 'schemas.district2.target.label_column': 'Grade'})


def test_a_target_column_missing_from_the_data_is_refused(tmp_path):
    f = tmp_path/'no-class.csv'
    pd.read_csv(ROOT/'data'/'demo'/'other-school.csv', dtype=str).drop(columns='Class').to_csv(f, index=False)
    with pytest.raises(data.DataError, match=rf"{f}: missing required column\(s\) Class"):
        data.clean_table(f, load_params(overrides=OTHER))


def test_an_at_risk_label_not_among_the_declared_values_is_refused():
    with pytest.raises(ParamsError, match=r"schemas.district2.target.at_risk_labels = \['Low'\]: unknown label\(s\) \['Low'\]: expected values of column Class: L, M, H"):
        load_params(overrides={**OTHER, 'schemas.district2.target.at_risk_labels': ['Low']})


def test_an_unknown_setup_for_the_active_schema_is_refused(tmp_path, capsys):
    with pytest.raises(ParamsError, match=r"run.setup = 'C': expected a setup of schema 'district2' \(schemas.district2.setups\): all"):
        load_params(overrides={**OTHER, 'run.setup': 'C'})
    assert runner.main(['run', '--stages', 'prepare', '--setup', 'D', '--out', str(tmp_path)]) == 1   # `studentperf run --setup D`
    assert "run.setup = 'D': expected a setup of schema 'uci' (schemas.uci.setups): A, B, C" in capsys.readouterr().err
    assert not (tmp_path/'data').exists()                                        # refused before anything ran


def test_an_engineered_feature_whose_columns_are_absent_is_refused():
    with pytest.raises(ParamsError, match=r"schemas.district2.engineered.engagement.columns = \['raisedhands', 'absences'\]: unknown column\(s\) \['absences'\]"):
        load_params(overrides={**OTHER, 'schemas.district2.engineered.engagement.columns': ['raisedhands', 'absences']})
    with pytest.raises(ParamsError, match=r"features.engineered = \['total_alc'\]: unknown engineered feature\(s\) \['total_alc'\]: schema 'district2' declares engagement"):
        load_params(overrides={**OTHER, 'features.engineered': ['total_alc']})


def test_a_group_column_not_in_the_schema_is_refused():
    with pytest.raises(ParamsError, match=r"schemas.district2.groups = \['gender', 'sex'\]: unknown column\(s\) \['sex'\]"):
        load_params(overrides={**OTHER, 'schemas.district2.groups': ['gender', 'sex']})
    with pytest.raises(ParamsError, match=r"schemas.district2.skew_columns = \['Topic'\]: not numeric column\(s\) of schema 'district2': \['Topic'\]"):
        load_params(overrides={**OTHER, 'schemas.district2.skew_columns': ['Topic']})


def test_an_engineered_count_of_an_undeclared_value_or_on_prior_columns_is_refused():
    "A count of a value no counted column holds would be 0 everywhere; a feature on prior grades would break setups B and C."
    with pytest.raises(ParamsError, match=r"schemas.district2.engineered.parent_answers.value = 'yes': expected a declared value"):
        load_params(overrides={**OTHER, 'schemas.district2.engineered.parent_answers.value': 'yes'})   # the column holds Yes/No
    with pytest.raises(ParamsError, match=r"schemas.uci.engineered.total_alc.columns = \['G1', 'G2'\]: prior column\(s\)"):
        load_params(overrides={'schemas.uci.engineered.total_alc.columns': ['G1', 'G2']})


def test_a_schema_without_groups_is_evaluated(other_run, tmp_path):
    "groups is optional: the evaluation then has no per-group rows, and no error."
    import shutil
    _, out = other_run
    shutil.copytree(out, tmp_path/'run')
    ev = run_evaluate(load_params(overrides={**TINY, **OTHER, 'schemas.district2.groups': []}), tmp_path/'run')
    assert ev.groups.empty and ev.gaps.empty and (tmp_path/'run'/'metrics'/'eval_metrics.json').exists()


def test_outcomes_of_the_other_school_are_labels(tmp_path):
    "Monitoring and drift read the other school's outcome as its label: L is at risk, M and H pass; other values are quarantined."
    from studentperf import monitoring as mon, drift
    p, url = load_params(overrides=OTHER), f"sqlite:///{tmp_path/'log.sqlite'}"
    plog = mon.PredictionLog(url, flush_interval=0.02)
    res = pd.DataFrame({'probability_pass': [0.9, 0.3, 0.6], 'at_risk': [False, True, False], 'risk_band': ['low', 'high', 'watch']})
    plog.record([ONE] * 3, res, 'v-test', threshold=0.5, student_refs=['a', 'b', 'c'], source='batch')
    assert plog.close()
    (tmp_path/'o.csv').write_text('student_ref,Class\na,H\nb,L\nc,Z\n')
    n = mon.ingest_outcomes(url, tmp_path/'o.csv', p)
    assert (n['ingested'], n['quarantined']) == (2, 1)
    assert "Class 'Z': expected one of L, M, H" in pd.read_csv(n['quarantine'])['reason'].iloc[0]
    assert dict(zip(mon.labelled_frame(url)['student_ref'], mon.labelled_frame(url)['pass'])) == {'a': 1, 'b': 0}
    assert drift.outcome_labels(pd.DataFrame({'Class': ['L', 'M', None, 'Q']}), p).tolist()[:2] == [0.0, 1.0]
    req, oc = drift.simulate_stream('none', 20, seed=1, params=p)
    assert 'Class' not in req and list(oc.columns) == ['student_ref', 'Class', 'pass'] and ((oc['Class'] == 'L') == (oc['pass'] == 0)).all()
