"""The documentation's code runs and prints what it says, its links lead
somewhere, and CI runs the README's test command."""
import re
import sys

import pytest

from helpers import ROOT, run_unchecked

# Run before a documented block: mmdet and mmseg import as if not installed.
BLOCK_MM = """
import sys


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name in ('mmdet', 'mmseg'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)


sys.meta_path.insert(0, NotInstalled())
"""
CHECK_NO_MM = ("\nassert 'mmdet' not in resnest_mm.REGISTERED_SCOPES"
               "\nassert 'mmseg' not in resnest_mm.REGISTERED_SCOPES\n")

FENCE = re.compile(r'^ *```.*?^ *```', re.S | re.M)
HEADING = re.compile(r'^(#{1,6}) +(.+?) *#*$', re.M)
LINK = re.compile(r'\[[^\]]*\]\(([^()\s]+)\)')


def doc_pages():
    """The README and every page of ``docs/``."""
    return [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]


def headings(text):
    """``(level, title)`` of each heading outside code blocks."""
    text = FENCE.sub('', text)
    return [(len(m[1]), m[2]) for m in HEADING.finditer(text)]


def doc_section(path, heading):
    """The text under the heading ``heading`` (any level) of the markdown file
    ``path`` (relative to the repository), up to the next heading of the same
    or a higher level, code blocks kept whole."""
    text = (ROOT / path).read_text()
    lines, body, level = text.splitlines(keepends=True), [], None
    in_code = False
    for line in lines:
        if line.lstrip().startswith('```'):
            in_code = not in_code
        m = None if in_code else HEADING.match(line)
        if level is None:
            if m and m[2] == heading:
                level = len(m[1])
            continue
        if m and len(m[1]) <= level:
            break
        body.append(line)
    assert level is not None, f'{path} has no heading {heading!r}'
    return ''.join(body)


def readme_block(path, heading):
    """The first ```python block under ``heading`` in ``path``."""
    block = re.search(r'^```python\n(.*?)^```', doc_section(path, heading),
                      re.S | re.M)
    assert block, f'no python block under {heading!r} in {path}'
    return block.group(1)


def run_printing_block(code):
    """Run ``code`` with mmdet and mmseg blocked; its stdout lines and the
    ``# ->`` lines it documents."""
    proc = run_unchecked([sys.executable, '-c', BLOCK_MM + code + CHECK_NO_MM])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines(), re.findall(r'# -> (.*)', code)


def test_plain_pytorch_example_prints_what_the_docs_say():
    code = readme_block('docs/plain_pytorch.md',
                        'How do I use it without mmdet or mmseg?')
    printed, expected = run_printing_block(code)
    assert len(expected) == 6  # two attributes, four pyramid levels
    assert printed == expected


def test_readme_example_prints_what_it_says():
    code = readme_block('README.md', 'Use it in plain PyTorch')
    printed, expected = run_printing_block(code)
    assert len(expected) == 2  # the channels, the four feature shapes
    assert printed == expected


def test_ci_runs_the_readme_test_command():
    quickstart = doc_section('README.md', 'Quickstart')
    commands = re.search(r'```bash\n(.*?)```', quickstart, re.S).group(1)
    commands = [line.split('#')[0].strip() for line in commands.splitlines()]
    assert commands == ['make demo', 'make test']
    ci = (ROOT / '.ci' / 'run').read_text().splitlines()
    assert 'make test' in ci


def slug(title):
    """GitHub's anchor for a heading."""
    title = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', title)  # link text only
    return re.sub(r'[^\w\- ]', '', title.lower()).replace(' ', '-')


def anchors(path):
    """Every anchor GitHub gives the headings of ``path``."""
    seen, result = {}, set()
    for _, title in headings(path.read_text()):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f'{base}-{n}')
    return result


def relative_links(path):
    """``(target, anchor)`` of each relative link of ``path``, outside code
    (blocks and spans)."""
    text = re.sub(r'`[^`\n]*`', '', FENCE.sub('', path.read_text()))
    for target in LINK.findall(text):
        if re.match(r'[a-z][a-z0-9+.-]*:', target):  # https:, mailto: ...
            continue
        file, _, anchor = target.partition('#')
        yield file, anchor


DOCS_AND_CONFIG_READMES = [
    *doc_pages(), *sorted((ROOT / 'configs').glob('*/README.md'))
]


@pytest.mark.parametrize(
    'page',
    DOCS_AND_CONFIG_READMES,
    ids=[str(p.relative_to(ROOT)) for p in DOCS_AND_CONFIG_READMES])
def test_relative_links_lead_to_a_file_and_heading(page):
    dead = []
    for file, anchor in relative_links(page):
        target = (page.parent / file).resolve() if file else page
        if not target.exists():
            dead.append(f'{file}: no such file')
        elif anchor and target.suffix == '.md' and anchor not in anchors(
                target):
            dead.append(f'{file}#{anchor}: no such heading')
    assert not dead, dead
