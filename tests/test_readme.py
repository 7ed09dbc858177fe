"""The README's plain-PyTorch example runs and prints what it says."""
import re
import sys

from helpers import ROOT, run_unchecked

# Run before the README block: mmdet and mmseg import as if not installed.
BLOCK_MM = """
import sys


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name in ('mmdet', 'mmseg'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)


sys.meta_path.insert(0, NotInstalled())
"""


def readme_block(section):
    """The first ```python block under the README heading ``section``."""
    text = (ROOT / 'README.md').read_text()
    body = text.split(f'\n## {section}\n', 1)[1].split('\n## ', 1)[0]
    return re.search(r'```python\n(.*?)```', body, re.S).group(1)


def test_plain_pytorch_example_prints_what_the_readme_says():
    code = readme_block('In plain PyTorch')
    expected = re.findall(r'# -> (.*)', code)
    assert len(expected) == 6  # two attributes, four pyramid levels
    check = ("\nassert 'mmdet' not in resnest_mm.REGISTERED_SCOPES"
             "\nassert 'mmseg' not in resnest_mm.REGISTERED_SCOPES\n")
    proc = run_unchecked([sys.executable, '-c', BLOCK_MM + code + check])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == expected
