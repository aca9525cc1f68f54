"""What a path that cannot become a directory is, in words (issue 21 §5).

`mkdir` of a dangling or looping symlink fails with "File exists", which names neither the link
nor what is wrong with it. `broken_link` says it: where the link points, or that it loops.
"""
from __future__ import annotations

import errno
import os


def broken_link(path) -> str | None:
    """None unless `path` is a symlink that does not lead to anything: then what it is."""
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"{path} is a symlink loop ({path} -> {os.readlink(path)} -> ...)"
        return f"{path} is a dangling symlink (to {os.readlink(path)}, which does not exist)"
