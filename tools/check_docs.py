"""Check a built docs site (`make docs`, then `python tools/check_docs.py`): exits 1 and lists the problems if any.

Checks:
1. every notebook in `nbs/` has its page (nbdev's name: `01_data_prep.ipynb` -> `data_prep.html`), plus `index.html`,
   `api.html` and the search page with its index;
2. every internal link and image (`href`, `src`) of every page resolves to a file of the site, and its `#anchor`, if
   any, to an `id` on the target page;
3. every exported function and class in `studentperf/_modidx.py` (public names; methods are covered by their class)
   has a docstring, an entry on the page nbdev assigns it (its anchor exists) and a line in `api.html`;
4. nbdev's Quarto files are valid where Quarto is installed: `nbs/_quarto.yml`, `nbs/nbdev.yml`, `nbs/styles.css`.

Usage: python tools/check_docs.py [--site _docs] [--root DIR]
"""
from __future__ import annotations
import argparse, configparser, importlib, re, sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit, unquote
import yaml

ROOT = Path(__file__).resolve().parents[1]

class _Page(HTMLParser):
    "Collects the ids and the link targets of one HTML page."
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.links = set(), []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ('id', 'name'):
            if a.get(k) and (k == 'id' or tag == 'a'): self.ids.add(a[k])
        for k in ('href', 'src'):
            if a.get(k) is not None and not (tag == 'link' and a.get('rel') in ('canonical',)): self.links.append(a[k])

def parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding='utf-8', errors='replace'))
    return p

def page_of(nb: Path, nbs: Path) -> str:
    "The page nbdev gives a notebook (its path relative to nbs/, number prefix dropped, `.html`)."
    rel = nb.relative_to(nbs)
    return (rel.parent/re.sub(r'^\d+[a-zA-Z0-9]*_', '', rel.stem.lower())).with_suffix('.html').as_posix()

def notebooks(nbs: Path) -> list:
    "The notebooks nbdev documents (not in folders or files starting with `_` or `.`)."
    return sorted(p for p in nbs.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(nbs).parts))

def check_pages(site: Path, nbs: Path) -> list:
    probs = []
    for nb in notebooks(nbs):
        if not (site/page_of(nb, nbs)).exists(): probs.append(f"{nb.relative_to(nbs.parent)} has no page {page_of(nb, nbs)}")
    for f in ('index.html', 'api.html', 'search.html', 'searchindex.js'):
        if not (site/f).exists(): probs.append(f"site has no {f}")
    return probs

def check_links(site: Path) -> tuple[list, int]:
    "Broken internal links and anchors; returns (problems, number of internal links checked)."
    pages = {p: parse(p) for p in site.rglob('*.html')
             if not any(part.startswith(('_sources', '.')) for part in p.relative_to(site).parts)}
    probs, n = [], 0
    for page, info in sorted(pages.items()):
        for link in info.links:
            u = urlsplit(link)
            if u.scheme or link.startswith('//') or not (u.path or u.fragment): continue   # external, mailto:, data:, ...
            n += 1
            target = (page.parent/unquote(u.path)).resolve() if u.path else page
            if target.is_dir(): target = target/'index.html'
            where = f"{page.relative_to(site)}: link {link!r}"
            if not target.exists(): probs.append(f"{where}: no such file"); continue
            if u.fragment and target.suffix == '.html':
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(u.fragment) not in ids: probs.append(f"{where}: no anchor #{u.fragment} on {target.relative_to(site)}")
    return probs, n

def exported(root: Path, lib: str) -> dict:
    "{module: {public name: doc url}} from nbdev's `_modidx.py` (methods left out: their class is checked)."
    ns = {}
    exec((root/lib/'_modidx.py').read_text(encoding='utf-8'), ns)
    out = {}
    for mod, syms in ns['d']['syms'].items():
        for full, (url, _) in syms.items():
            name = full[len(mod) + 1:]
            if '.' in name or name.startswith('_'): continue
            out.setdefault(mod, {})[name] = url
    return out

def check_api(site: Path, root: Path, lib: str) -> tuple[list, int]:
    "Each public exported function/class: a docstring, an entry (anchor) on its page, a line in api.html."
    probs, n = [], 0
    api = (site/'api.html').read_text(encoding='utf-8') if (site/'api.html').exists() else ''
    sys.path.insert(0, str(root))
    for mod, names in sorted(exported(root, lib).items()):
        try: m = importlib.import_module(mod)
        except Exception as e: probs.append(f"{mod}: cannot import: {e}"); continue
        for name, url in sorted(names.items()):
            n += 1
            obj = getattr(m, name, None)
            if obj is None: probs.append(f"{mod}.{name}: in _modidx.py but not in the module (run nbdev_export)"); continue
            if not (getattr(obj, '__doc__', None) or '').strip(): probs.append(f"{mod}.{name}: no docstring")
            page, _, anchor = url.partition('#')
            if not (site/page).exists(): probs.append(f"{mod}.{name}: its page {page} is missing"); continue
            if anchor and anchor not in parse(site/page).ids: probs.append(f"{mod}.{name}: no show_doc entry #{anchor} on {page}")
            if not re.search(rf'href="{re.escape(page)}#[^"]*"[^>]*>(<span[^>]*>)?<code[^>]*><span class="pre">{re.escape(name)}</span>', api):
                probs.append(f"{mod}.{name}: not listed in api.html")
    return probs, n

def check_quarto(root: Path, cfg: dict) -> list:
    "nbdev's Quarto files: present, valid YAML, consistent with settings.ini."
    nbs, probs = root/cfg.get('nbs_path', 'nbs'), []
    try:
        q = yaml.safe_load((nbs/'_quarto.yml').read_text())
        if q.get('project', {}).get('type') != 'website': probs.append("nbs/_quarto.yml: project.type is not website")
        for f in q.get('metadata-files', []):
            if f != 'sidebar.yml' and not (nbs/f).exists(): probs.append(f"nbs/_quarto.yml names {f}, which is missing")
        css = q.get('format', {}).get('html', {}).get('css')
        if css and not (nbs/css).exists(): probs.append(f"nbs/_quarto.yml names {css}, which is missing")
    except Exception as e: probs.append(f"nbs/_quarto.yml: {e}")
    try:
        y = yaml.safe_load((nbs/'nbdev.yml').read_text())
        if y.get('project', {}).get('output-dir') != cfg.get('doc_path', '_docs'): probs.append("nbs/nbdev.yml: output-dir differs from doc_path")
        if y.get('website', {}).get('title') != cfg.get('title', cfg.get('lib_name')): probs.append("nbs/nbdev.yml: title differs from settings.ini")
    except Exception as e: probs.append(f"nbs/nbdev.yml: {e}")
    return probs

def check(site: Path, root: Path=ROOT) -> tuple[list, dict]:
    "All checks; returns (problems, counts)."
    cp = configparser.ConfigParser(); cp.read(root/'settings.ini'); cfg = dict(cp['DEFAULT'])
    nbs, lib = root/cfg.get('nbs_path', 'nbs'), cfg.get('lib_path', cfg.get('lib_name'))
    if not (site/'index.html').exists(): return [f"{site}/index.html is missing: build the site first (make docs)"], {}
    probs = check_pages(site, nbs)
    lp, nlinks = check_links(site)
    ap, nsyms = check_api(site, root, lib)
    probs += lp + ap + check_quarto(root, cfg)
    return probs, dict(notebooks=len(notebooks(nbs)), links=nlinks, exported=nsyms)

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--site', help='the built site (default: doc_path of settings.ini)')
    p.add_argument('--root', default=str(ROOT), help='project root')
    a = p.parse_args(argv)
    root = Path(a.root).resolve()
    site = Path(a.site).resolve() if a.site else root/'_docs'
    probs, n = check(site, root)
    for pr in probs: print('check_docs:', pr)
    print(f"check_docs: {n.get('notebooks', 0)} notebooks, {n.get('links', 0)} internal links, "
          f"{n.get('exported', 0)} exported names checked: {'OK' if not probs else f'{len(probs)} problem(s)'}")
    return 1 if probs else 0

if __name__ == '__main__': sys.exit(main())
