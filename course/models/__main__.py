"""python -m course.models PATH...: the sha256 and size of trained files or folders, for
``course.models.registry.ENTRIES``."""

import sys

from .registry import ASSETS, digest

for target in sys.argv[1:] or [str(ASSETS / "tiny_shapes")]:
    sha, nbytes = digest(target)
    print(f'{target}: sha256="{sha}", size={nbytes}  ({nbytes / 1e6:.2f} MB)')
