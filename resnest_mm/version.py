"""The package version, in the one place: setup.py executes this file, as
importing the package would need its dependencies installed."""
import re

__version__ = '0.1.0'
# '0.1.0rc1' -> (0, 1, 0, 'rc1'), as mmdet's version_info
version_info = tuple(
    int(part) if part.isdigit() else part
    for part in re.findall(r'\d+|rc\d+', __version__))
