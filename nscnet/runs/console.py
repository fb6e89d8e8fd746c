"""What a step writes to the console: progress bars and result lines that never garble each other.

- `bars_enabled()`: progress bars only on a terminal (stderr is a TTY), so a log file holds
  whole lines; `NSCNET_PROGRESS=0` turns them off everywhere, `NSCNET_PROGRESS=1` on everywhere.
- `say(text)`: a result line, printed through `tqdm.write`, which lifts any open bar, writes
  the line and redraws the bar below it.
- `bar(...)`: a tqdm bar with these rules; `nscnet.cli` also routes log records through
  tqdm (`tqdm.contrib.logging.logging_redirect_tqdm`) while a step runs.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

PROGRESS_ENV = "NSCNET_PROGRESS"


def bars_enabled() -> bool:
    """Bars on a terminal only; NSCNET_PROGRESS=0 / 1 forces them off / on."""
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def bar(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm bar (same arguments), shown only when `bars_enabled()`."""
    kwargs.setdefault("disable", not bars_enabled())
    return tqdm(iterable, **kwargs)


def say(text: str) -> None:
    """Print one result line without breaking an open progress bar."""
    tqdm.write(str(text), file=sys.stdout)
    sys.stdout.flush()
