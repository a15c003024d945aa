"The package's shape: no import cycle between its modules (imports inside functions count), one home per public name."
import ast, collections
from pathlib import Path
import studentperf

PKG = Path(studentperf.__file__).parent
MODULES = {p.stem: p for p in PKG.glob('*.py') if not p.stem.startswith('_')}
# Per-module conventions, not shared names: each module's own logger, and each module's CLI registration hook.
CONVENTIONS = {'log', 'add_commands'}


def imports_of(path: Path) -> set:
    "The package modules a module imports, anywhere in its code (top level or inside functions)."
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            parts = (n.module or '').split('.')
            if n.level and not n.module: out |= {a.name for a in n.names if a.name in MODULES}
            elif n.level and parts[0] in MODULES: out.add(parts[0])
            elif parts[0] == 'studentperf':
                if len(parts) > 1 and parts[1] in MODULES: out.add(parts[1])
                elif len(parts) == 1: out |= {a.name for a in n.names if a.name in MODULES}
        elif isinstance(n, ast.Import):
            out |= {a.name.split('.')[1] for a in n.names if a.name.startswith('studentperf.') and a.name.split('.')[1] in MODULES}
    return out


def find_cycle(graph: dict) -> list|None:
    "A cycle in `graph` (`{node: set of nodes}`) as a list of nodes, or None."
    state = {}
    def visit(u, stack):
        state[u] = 'open'
        for v in sorted(graph[u]):
            if state.get(v) == 'open': return stack[stack.index(v):] + [v]
            if v not in state and (c := visit(v, stack + [v])): return c
        state[u] = 'done'
    for m in sorted(graph):
        if m not in state and (c := visit(m, [m])): return c


def test_cycle_finder_finds_cycles():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_the_package_has_no_import_cycle():
    graph = {m: imports_of(p) - {m} for m, p in MODULES.items()}
    assert graph['runner'] >= {'data', 'serving', 'monitoring', 'drift', 'auth'}   # the walk sees the imports at all
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_two_modules_export_the_same_name():
    owners = collections.defaultdict(list)
    for m, p in MODULES.items():
        for n in ast.parse(p.read_text()).body:
            if isinstance(n, ast.Assign) and any(getattr(t, 'id', None) == '__all__' for t in n.targets):
                for e in n.value.elts: owners[e.value].append(m)
    shared = {k: v for k, v in owners.items() if len(v) > 1 and k not in CONVENTIONS}
    assert not shared, f"public names defined in several modules: {shared}"


# Words that are column names of the UCI schema and also the code's own vocabulary, in another sense: the quarantine
# and decision `reason` field (data, monitoring, drift) and the direction word `higher` (handoff's interpretation).
OWN_WORDS = {'reason', 'higher'}


def schema_columns() -> set:
    "Every column name of every schema block in params.yaml."
    from studentperf.config import load_params
    return {c for s in load_params()['schemas'].values() for c in s['columns']}


def quoted_column_names(path: Path, columns: set) -> list:
    "`(line, name)` of string literals in a module that are column names of a schema."
    out = []
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in columns and n.value not in OWN_WORDS:
            out.append((n.lineno, n.value))
    return sorted(out)


def test_no_module_names_a_schema_column():
    "Column names live in params.yaml (and the demo recipes): no module hard-codes one, so any school's schema works."
    columns = schema_columns()
    assert {'G3', 'absences', 'Class', 'raisedhands'} <= columns            # both schemas are read
    found = {f"{m}.py:{line}: {name!r}" for m, p in MODULES.items() for line, name in quoted_column_names(p, columns)}
    assert not found, f"schema column names in the package (read them from the schema instead): {sorted(found)}"


def test_the_column_name_check_can_fail(tmp_path):
    bad = tmp_path/'bad.py'
    bad.write_text("def f(X):\n    return X['Dalc'] + X['raisedhands'] + len('higher') + len(X['reason'])\n")
    assert quoted_column_names(bad, schema_columns()) == [(2, 'Dalc'), (2, 'raisedhands')]
