"""Build the documentation site into `_docs/` without Quarto (a dev tool: `make docs`).

nbdev renders its docs with Quarto, which cannot be installed here. This script keeps nbdev's own processing and swaps
only the renderer:

1. **nbdev_proc_nbs** (nbdev's processors: `#| hide`, `#| export`, show_doc cells added after every exported
   function and executed, backticked names turned into doc links, front matter from the `# Title` / `> summary`
   cells) writes `_proc/`. This is what `nbdev_proc_nbs` does, through nbdev's public functions: `refresh_quarto_yml`
   (nbdev's standard Quarto files `nbs/nbdev.yml` from settings.ini and `nbs/_quarto.yml` when absent, so `nbdev_docs`
   still works where Quarto is installed), `nbdev_sidebar` (the page order) and `nbdev.serve.proc_nbs`. The command `nbdev_proc_nbs` itself would first
   download and install Quarto; its other step, the module index, is `nbdev_export`'s (kept fresh by `make check-sync`).
2. The processed notebooks are turned into Sphinx + MyST-NB sources: the page names are nbdev's (`01_data_prep.ipynb`
   -> `data_prep.html`, the `output-file` of the front matter), `output: asis` cells (show_doc) become Markdown, Quarto
   cell options become MyST-NB tags, and links to the configured doc site become links between pages.
3. Sphinx (furo theme) renders them with navigation, search and an API index page (`api.html`) listing every
   exported function and class with a link to its show_doc entry.

Figures appear when executed notebooks are given: `--executed DIR` takes a run's report folder (`outputs/reports`,
`reports/demo-C`, ...). An executed notebook replaces the clean one only when its code is identical to the notebook
in `nbs/` (so the docs never show stale code); otherwise the clean notebook is used and a note is printed.

Usage: python tools/docs.py [--out _docs] [--executed DIR] [--root DIR] [--verbose]
"""
from __future__ import annotations
import argparse, os, re, runpy, shutil, subprocess, sys, tempfile, time, importlib, inspect
from pathlib import Path
import nbformat, yaml

ROOT = Path(__file__).resolve().parents[1]

CSS = """
.sourcelink { float: right; font-size: smaller; }
.cell_output .output.text_plain pre, .cell_output .output.stream pre { border-left: 2px solid lightsalmon; }
p.description { font-style: italic; font-size: 120%; opacity: .75; }
"""

# ---------------------------------------------------------------- 1. nbdev processing

def settings(root: Path) -> dict:
    "The `[DEFAULT]` section of settings.ini."
    import configparser
    cp = configparser.ConfigParser()
    cp.read(root/'settings.ini')
    return dict(cp['DEFAULT'])

def code_sources(nb) -> list:
    "The code cells' sources, without papermill's injected-parameters cell: what must match for an executed notebook to stand in."
    return [c.source.strip() for c in nb.cells
            if c.cell_type == 'code' and 'injected-parameters' not in c.get('metadata', {}).get('tags', [])]

def stage_notebooks(root: Path, executed: Path|None, log=print) -> tuple[Path, list]:
    "Copy `nbs/` to a staging folder, swapping in executed notebooks whose code is unchanged; returns (folder, swapped names)."
    stage = Path(tempfile.mkdtemp(prefix='studentperf-docs-'))/'nbs'
    shutil.copytree(root/'nbs', stage, ignore=shutil.ignore_patterns('.ipynb_checkpoints', 'sidebar.yml'))
    swapped = []
    if executed:
        for ex in sorted(Path(executed).glob('*.ipynb')):
            src = stage/ex.name
            if not src.exists(): continue
            enb, snb = nbformat.read(ex, as_version=4), nbformat.read(src, as_version=4)
            if code_sources(enb) != code_sources(snb):
                log(f"docs: {ex} was executed from a different version of nbs/{ex.name}: using the clean notebook")
                continue
            nbformat.write(enb, src)
            swapped.append(ex.name)
    return stage, swapped

def nbdev_proc(root: Path, nbs: Path) -> Path:
    "nbdev's processing of `nbs` for docs (`nbdev_proc_nbs` without its Quarto installer); returns the `_proc` folder."
    old = Path.cwd()
    os.chdir(root)
    try:
        from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
        from nbdev.serve import proc_nbs
        refresh_quarto_yml()
        nbdev_sidebar(path=str(nbs), force=True)     # the page order (index first)
        proc_nbs(str(nbs), n_workers=0, force=True)
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise SystemExit(f"docs: nbdev_proc_nbs failed: {msg[0] if msg else type(e).__name__}\n"
                         + '\n'.join('    ' + l for l in msg[1:12])
                         + f"\n  cause: {type(e.__cause__).__name__}: {e.__cause__}" * (e.__cause__ is not None)
                         + "\n  nbdev runs every exported cell, show_doc cell and cell with an import when it builds docs: "
                           "keep imports in cells of their own (nbdev FAQ)") from None
    finally: os.chdir(old)
    return root/'_proc'

# ---------------------------------------------------------------- 2. processed notebooks -> MyST-NB sources

_DIRECTIVE = re.compile(r'^\s*#\s*\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

def cell_options(src: str) -> tuple[dict, str]:
    "Split the leading Quarto/nbdev `#| key: value` lines off a code cell."
    lines, opts = src.splitlines(), {}
    while lines and (m := _DIRECTIVE.match(lines[0])):
        opts[m.group(1).lower()] = m.group(2).strip().lower()
        lines.pop(0)
    return opts, '\n'.join(lines)

def front_matter(cell) -> dict:
    "The YAML front matter nbdev puts in a raw cell (or {})."
    m = re.match(r'^\s*---\s*\n(.*?)\n---\s*$', cell.source, re.S) if cell.cell_type == 'raw' else None
    return (yaml.safe_load(m.group(1)) or {}) if m else {}

def slugify(title: str) -> str:
    "A heading's anchor as MyST writes it (GitHub style: lower case, keeps `_`; nbdev's anchors for functions are the same)."
    from myst_parser.slugs import github_slugify
    return github_slugify(title.strip())

_SRC_LINK = re.compile(r'^\[source\]\((\S+?)\)(\{[^}]*\})?\s*$', re.M)

def showdoc_markdown(md: str) -> str:
    "show_doc's Markdown (`---`, a Quarto-styled `[source]` link, `### name`, signature, docstring) in MyST form."
    md = re.sub(r'^\s*---\s*\n', '', md)            # a transition just before a heading is invalid in docutils
    src = _SRC_LINK.search(md)
    if src:
        md = (md[:src.start()] + md[src.end():]).lstrip('\n')
        link = f'<a class="sourcelink" href="{src.group(1)}">source</a>'
        md = re.sub(r'^(#{1,6} .+)$', lambda m: m.group(1) + '\n\n' + link, md, count=1, flags=re.M)
    return md

def md_output(cell) -> str|None:
    "The text/markdown output of a cell, if any."
    for o in cell.get('outputs', []):
        d = o.get('data', {})
        if 'text/markdown' in d: return ''.join(d['text/markdown'])
    return None

class LinkFixer:
    "Turn links to the configured doc site (`doc_host` + `doc_baseurl`) into links between the local pages."
    def __init__(self, base: str, pages: dict):
        self.base, self.pages, self.problems = base.rstrip('/'), pages, []   # pages: {'data_prep': set of anchors}
        self.rx = re.compile(re.escape(self.base) + r'/([\w\-/]+)\.html(#[\w\-.]+)?')
    def _one(self, m) -> str:
        page, anchor = m.group(1), (m.group(2) or '')[1:]
        if page not in self.pages:
            self.problems.append(f"link to {m.group(0)}: no page {page}.html"); return m.group(0)
        if anchor and anchor not in self.pages[page]:
            alt = anchor.replace('.', '')
            if alt in self.pages[page]: anchor = alt
            else: self.problems.append(f"link to {m.group(0)}: no anchor #{anchor} on {page}.html"); anchor = ''
        ext = '.md' if page == 'api' else '.ipynb'       # MyST resolves links to source files (and heading anchors)
        return f"{page}{ext}" + (f"#{anchor}" if anchor else '')
    def __call__(self, text: str) -> str: return self.rx.sub(self._one, text)

def page_name(path: Path, fm: dict) -> str:
    "nbdev's page name: the front matter's `output-file`, else the notebook name without its number prefix."
    if fm.get('output-file'): return Path(fm['output-file']).stem
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', path.stem.lower())

def sidebar_order(proc: Path, nbs: Path) -> list:
    "Processed notebooks in nbdev's sidebar order (index first, then by number)."
    order = []
    sb = nbs/'sidebar.yml'
    if sb.exists():
        def walk(x):
            if isinstance(x, str): order.append(x)
            elif isinstance(x, dict): [walk(v) for v in x.values()]
            elif isinstance(x, list): [walk(v) for v in x]
        walk((yaml.safe_load(sb.read_text()) or {}).get('website', {}).get('sidebar', {}).get('contents', []))
    found = sorted(p.relative_to(proc).as_posix() for p in proc.rglob('*.ipynb'))
    return [o for o in order if o in found] + [f for f in found if f not in order]

def convert(proc: Path, nbs: Path, src: Path, cfg: dict) -> list:
    "Write one MyST-NB notebook per processed notebook into `src`; returns [(page, title, notebook)] in sidebar order."
    prepared = []
    for rel in sidebar_order(proc, nbs):
        nb = nbformat.read(proc/rel, as_version=4)
        fm = next((front_matter(c) for c in nb.cells[:2] if front_matter(c)), {})
        cells = []
        title = fm.get('title') or Path(rel).stem
        head = f"# {title}\n"
        if fm.get('description'): head += f"\n```{{rst-class}} description\n```\n{fm['description']}\n"
        cells.append(nbformat.v4.new_markdown_cell(head))
        for c in nb.cells:
            if front_matter(c): continue
            if c.cell_type == 'markdown':
                if 'WARNING: THIS FILE WAS AUTOGENERATED' in c.source: continue
                cells.append(nbformat.v4.new_markdown_cell(c.source))
            elif c.cell_type == 'code':
                opts, body = cell_options(c.source)
                if opts.get('include') == 'false': continue
                md = md_output(c)
                if opts.get('output') == 'asis' and md is not None:     # show_doc: its Markdown is part of the page
                    cells.append(nbformat.v4.new_markdown_cell(showdoc_markdown(md))); continue
                tags = [t for t in c.get('metadata', {}).get('tags', []) if t in ('parameters', 'injected-parameters')]
                if opts.get('echo') == 'false': tags.append('remove-input')
                if opts.get('output') == 'false': tags.append('remove-output')
                if not body.strip() and not c.get('outputs'): continue
                nc = nbformat.v4.new_code_cell(body, outputs=c.get('outputs', []), execution_count=c.get('execution_count'))
                if tags: nc.metadata['tags'] = tags
                cells.append(nc)
        prepared.append((page_name(Path(rel), fm), title, cells))
    # anchors of every page, for the link fixer
    heading = re.compile(r'^#{1,6}\s+(.+?)\s*#*\s*$', re.M)
    anchors = {p: {slugify(h) for c in cells if c.cell_type == 'markdown' for h in heading.findall(c.source)}
               for p, _, cells in prepared}
    anchors.setdefault('api', set())
    fix = LinkFixer(cfg.get('doc_host', '') + cfg.get('doc_baseurl', ''), anchors)
    out = []
    for page, title, cells in prepared:
        for c in cells:
            if c.cell_type == 'markdown': c.source = fix(c.source)
            for o in c.get('outputs', []):
                d = o.get('data', {})
                if 'text/markdown' in d: d['text/markdown'] = fix(''.join(d['text/markdown']))
        nb = nbformat.v4.new_notebook(cells=cells, metadata={
            'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'},
            'language_info': {'name': 'python'}})
        nbformat.write(nb, src/f'{page}.ipynb')
        out.append((page, title, src/f'{page}.ipynb'))
    return out, fix.problems

def api_page(root: Path, cfg: dict, pages: list) -> tuple[str, list]:
    "Markdown of the API index: every exported function and class of `_modidx`, linked to its show_doc entry."
    sys.path.insert(0, str(root))
    syms = runpy.run_path(str(root/cfg['lib_path']/'_modidx.py'))['d']['syms']   # nbdev_export's index of `root`'s exported names
    have = {p for p, _, _ in pages}
    lines = ['# API reference', '',
             'Every function and class the notebooks export, by module, with its one-line docstring. '
             'Each name links to its entry (signature, parameters, source link) in the notebook that defines it.', '']
    missing = []
    for mod in sorted(syms):
        entries = [(k.split('.', 2)[-1] if k.count('.') >= 2 else k, url) for k, (url, _) in syms[mod].items()]
        entries = [(n, u) for n, u in entries if not any(p.startswith('_') and not p.startswith('__') for p in n.split('.'))
                   and '.' not in n]
        if not entries: continue
        page = Path(entries[0][1].split('#')[0]).stem
        lines += [f'## `{mod}`', '', f'Notebook page: [{page}]({page}.ipynb)', '',
                  '| name | summary |', '|---|---|']
        try: m = importlib.import_module(mod)
        except Exception as e: m = None; missing.append(f"{mod}: cannot import ({e})")
        for name, url in sorted(entries, key=lambda x: x[0].lower()):
            pg, _, anchor = url.partition('#')
            if Path(pg).stem not in have: missing.append(f"{mod}.{name}: no page {pg}")
            doc = (inspect.getdoc(getattr(m, name, None)) or '') if m else ''
            first = doc.strip().splitlines()[0] if doc.strip() else '*(no docstring)*'
            first = first.replace('|', '\\|')
            lines.append(f'| [`{name}`]({Path(pg).stem}.ipynb#{anchor}) | {first} |')
        lines.append('')
    return '\n'.join(lines) + '\n', missing

CONF = '''# generated by tools/docs.py
import re
project = {title!r}
author = {author!r}
copyright = {copyright!r}
extensions = ["myst_nb"]
nb_execution_mode = "off"
nb_render_markdown_format = "myst"
myst_enable_extensions = ["attrs_inline", "colon_fence", "deflist", "dollarmath", "html_image"]
myst_heading_anchors = 6
myst_heading_slug_func = "github"
suppress_warnings = ["myst.header", "misc.highlighting_failure", "mystnb.unknown_mime_type"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = {theme!r}
html_title = {title!r}
html_static_path = ["_static"]
html_css_files = ["studentperf.css"]
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
'''

def write_sources(root: Path, proc: Path, nbs: Path, src: Path, log=print) -> list:
    "Create the Sphinx source folder; returns the pages [(name, title, path)] and the problems found."
    cfg = settings(root)
    src.mkdir(parents=True, exist_ok=True)
    pages, problems = convert(proc, nbs, src, cfg)
    api, miss = api_page(root, cfg, pages)
    (src/'api.md').write_text(api, encoding='utf-8')
    problems += miss
    names = [p for p, _, _ in pages]
    if 'index' not in names: raise SystemExit('docs: no index notebook (nbs/index.ipynb) was processed')
    toc = '\n'.join(n for n in names if n != 'index') + '\napi\n'
    idx = nbformat.read(src/'index.ipynb', as_version=4)
    idx.cells.append(nbformat.v4.new_markdown_cell(f"```{{toctree}}\n:maxdepth: 1\n:caption: Notebooks\n:hidden:\n\n{toc}```\n"))
    nbformat.write(idx, src/'index.ipynb')
    (src/'_static').mkdir(exist_ok=True)
    (src/'_static'/'studentperf.css').write_text(CSS)
    try: import furo; theme = 'furo'  # noqa: F401
    except ImportError: theme = 'alabaster'
    (src/'conf.py').write_text(CONF.format(title=cfg.get('title') or cfg.get('lib_name'), author=cfg.get('author', ''),
                                          copyright=cfg.get('copyright', '').replace('%(author)s', cfg.get('author', '')),
                                          theme=theme))
    return pages, problems

# ---------------------------------------------------------------- 3. render

def sphinx(src: Path, out: Path, quiet: bool=True) -> str:
    "Run sphinx-build (html); returns its warnings. The site replaces `out` only when the build succeeded."
    tmp = Path(tempfile.mkdtemp(prefix='studentperf-sphinx-'))
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-d', str(tmp/'doctrees'), '-j', '2', str(src), str(tmp/'html')]
    if quiet: cmd.insert(3, '-q')
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode: raise SystemExit(f"docs: sphinx-build failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    (tmp/'html'/'.nojekyll').write_text('')          # GitHub Pages: serve the _static/ folders
    (tmp/'html'/'.buildinfo').unlink(missing_ok=True)
    if out.exists(): shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(tmp/'html'), str(out))
    shutil.rmtree(tmp, ignore_errors=True)
    return r.stderr

def build(root: Path=ROOT, out: Path|None=None, executed: Path|None=None, quiet: bool=True, log=print) -> dict:
    "The whole build; returns timings, pages, the executed notebooks used and the problems found."
    root = Path(root).resolve()
    out = Path(out).resolve() if out else root/settings(root).get('doc_path', '_docs')
    t0 = time.time()
    stage, swapped = stage_notebooks(root, Path(executed) if executed else None, log)
    proc = nbdev_proc(root, stage)
    t1 = time.time()
    src = stage.parent/'src'
    pages, problems = write_sources(root, proc, stage, src, log)
    warnings = sphinx(src, out, quiet)
    t2 = time.time()
    shutil.rmtree(stage.parent, ignore_errors=True)
    return dict(out=str(out), pages=[p for p, _, _ in pages], executed=swapped, problems=problems,
                warnings=[w for w in warnings.splitlines() if 'WARNING' in w or 'ERROR' in w],
                seconds={'nbdev_proc': round(t1 - t0, 1), 'sphinx': round(t2 - t1, 1)})

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', help='site folder (default: doc_path of settings.ini, _docs)')
    p.add_argument('--executed', help="folder of executed notebooks (a run's reports/) to take outputs and figures from")
    p.add_argument('--root', default=str(ROOT), help='project root (default: this checkout)')
    p.add_argument('--verbose', action='store_true', help="show sphinx-build's progress")
    a = p.parse_args(argv)
    ex = Path(a.executed) if a.executed else None
    if ex and not ex.is_dir(): print(f"docs: {ex} does not exist: building from the clean notebooks only"); ex = None
    r = build(Path(a.root), Path(a.out) if a.out else None, ex, quiet=not a.verbose)
    for w in r['warnings']: print('sphinx:', w)
    for pr in r['problems']: print('docs: problem:', pr)
    print(f"docs: {len(r['pages'])} notebook pages + api.html in {r['out']} "
          f"(nbdev_proc {r['seconds']['nbdev_proc']} s, sphinx {r['seconds']['sphinx']} s); "
          f"executed outputs from: {', '.join(r['executed']) or 'none (clean notebooks)'}")
    print(f"docs: open {r['out']}/index.html")
    return 1 if r['problems'] else 0

if __name__ == '__main__': sys.exit(main())
