"""Generate README.md from nbs/index.ipynb without Quarto (nbdev_readme needs Quarto).

Cells with an nbdev `#| hide` directive are left out; the rest is rendered with nbconvert's Markdown exporter.
Usage: python tools/readme.py [--check]   (--check: exit 1 if README.md is out of date)
"""
import re, sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

root = Path(__file__).resolve().parents[1]
HIDE = re.compile(r'^\s*#\s*\|\s*hide\s*$', re.M)

def render() -> str:
    nb = nbformat.read(root/'nbs'/'index.ipynb', as_version=4)
    nb.cells = [c for c in nb.cells if not (c.cell_type == 'code' and HIDE.search(c.source))]
    body, _ = MarkdownExporter().from_notebook_node(nb)
    body = re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
    return '<!-- generated from nbs/index.ipynb by tools/readme.py (make readme): edit the notebook, not this file -->\n\n' + body

if __name__ == '__main__':
    text, readme = render(), root/'README.md'
    if '--check' in sys.argv:
        ok = readme.exists() and readme.read_text(encoding='utf-8') == text
        print('README.md is up to date' if ok else 'README.md is out of date: run `make readme`')
        sys.exit(0 if ok else 1)
    readme.write_text(text, encoding='utf-8')
    print(f'wrote {readme}')
