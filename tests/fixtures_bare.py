"""A bare machine for one command: every Chrome/Chromium kaleido could find is hidden.

kaleido (choreographer) finds a browser through BROWSER_PATH, PATH, the usual install paths
(/usr/bin/chromium even off PATH) and its own download; `hiding_prefix()` returns a command
prefix that runs a command in a private mount namespace (`unshare -m`, root only) where each of
those files is covered by /dev/null (not executable) and Debian's /usr/lib/chromium by an
empty tmpfs. Used by tests/test_bare_machine.py and by .ci/run:

    python -m tests.fixtures_bare COMMAND...   # COMMAND with no browser to be found
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

BROWSER_DIRS = ("/usr/lib/chromium", "/opt/google/chrome", "/opt/chromium.org")


def browser_files() -> list[str]:
    """Every browser executable choreographer would try, that exists here."""
    from choreographer.browsers._chrome_constants import chromium_based_browsers

    found = set()
    for info in chromium_based_browsers.values():
        for name in info.exe_names:
            if path := shutil.which(name):
                found.update((path, os.path.realpath(path)))
        found.update(p for p in info.typical_paths if os.path.exists(p))
    return sorted(p for p in found if os.path.isfile(p))


def browser_dirs() -> list[str]:
    """Browser install folders here, kaleido's own download (`plotly_get_chrome`) included."""
    from choreographer.cli._cli_utils import get_chrome_download_path, get_old_chrome_download_path

    dirs = set(BROWSER_DIRS)
    for exe in (get_chrome_download_path(mkdir=False), get_old_chrome_download_path()):
        if exe is not None:
            dirs.add(str(Path(exe).parent))
    return sorted(d for d in dirs if os.path.isdir(d))


def hiding_prefix() -> list[str] | None:
    """[] when no browser is there anyway; the `unshare` prefix hiding them; None when they are
    there and cannot be hidden (not root, or no unshare)."""
    os.environ.pop("BROWSER_PATH", None)
    files = browser_files()
    dirs = browser_dirs()
    if not files and not dirs:
        return []
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    script = "; ".join([*(f"mount --bind /dev/null {shlex.quote(f)}" for f in files),
                        *(f"mount -t tmpfs none {shlex.quote(d)}" for d in dirs), 'exec "$@"'])
    return ["unshare", "-m", "sh", "-c", script, "sh"]


if __name__ == "__main__":
    prefix = hiding_prefix()
    if prefix is None:
        sys.exit("tests.fixtures_bare: a browser is installed and only root can hide it (unshare -m)")
    command = sys.argv[1:]
    os.execvp((prefix + command)[0], prefix + command)
