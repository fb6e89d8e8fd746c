"""One writer at a time for a folder or file: an OS lock that dies with its process.

`exclusive(target)` holds `fcntl.flock` on a small lock file next to the target
(`<parent>/.<name>.nscnet-lock`) for as long as the block runs. The kernel drops the lock
when the holding process ends, however it ends (SIGKILL included), so a dead holder never
blocks anyone; the lock file itself stays (deleting a lock file that others may have open
would let two processes hold "the" lock at once). While it holds the lock, the holder's pid,
host, start time and command line are in the lock file, so whoever finds it busy can say who.

Used by every step that writes a shared place: `preprocess` (the dataset folder), `synth` and
`predict` (their `out` folders), the trainers (a run's checkpoint folder, so one run is
never resumed twice at once), study workers (the first creation of a SQLite tracking store,
each cached feature file) and the Optuna journal file (`JournalFlock`, in place of Optuna's
symlink lock, which a killed worker leaves behind for 30 s).

A busy target: with `wait=True` the caller logs one line naming the target and the holder and
waits for it; `NSCNET_LOCK_WAIT_S` bounds that wait (seconds; 0 = never wait), after which,
as with `wait=False`, `Busy` (a DataError: one line, exit code 1) names both.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import IO, Iterator

from nscnet.config import DataError

log = logging.getLogger(__name__)

WAIT_ENV = "NSCNET_LOCK_WAIT_S"
SUFFIX = ".nscnet-lock"
POLL_S = 0.1


class Busy(DataError):
    """Another live process holds the lock of a folder or file this step must write."""


def lock_path(target: str | Path) -> Path:
    """The lock file of `target`: beside it, hidden, the same for every spelling of the path."""
    target = Path(target).expanduser().resolve()
    return target.parent / f".{target.name}{SUFFIX}"


def holder(path: str | Path) -> str:
    """Who holds the lock file `path`, in words ("pid 123 on host x (nscnet preprocess, since 10:02:03)")."""
    for _ in range(5):  # the holder writes its name just after it took the lock: give it a moment
        try:
            info = json.loads(Path(path).read_text() or "null")
        except (OSError, ValueError):
            info = None
        if info:
            since = time.strftime("%H:%M:%S", time.localtime(info.get("since", 0)))
            return f"pid {info.get('pid')} on host {info.get('host')} ({info.get('command', '?')}, since {since})"
        time.sleep(0.05)
    return "another process"


def _wait_limit(wait: bool, bounded: bool = True) -> float | None:
    """Seconds to wait for a busy lock (None: as long as the holder lives)."""
    if not wait:
        return 0.0
    if not bounded:
        return None
    text = os.environ.get(WAIT_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{WAIT_ENV}={text!r} is not a number of seconds") from None
    return max(value, 0.0)


def _command() -> str:
    words = [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:2]]
    if words and words[0] in ("__main__.py", "cli.py", "-m", "-c"):
        words[0] = "nscnet"
    return " ".join(words)[:120]


def _take(fh: IO[str], path: Path, target: Path, what: str, wait: bool, level: int, bounded: bool) -> None:
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    limit = _wait_limit(wait, bounded)
    who = holder(path)
    advice = f"wait for it to end, or choose another {what}"
    if limit == 0:
        raise Busy(f"{what} {target} is in use by {who}: {advice}")
    log.log(level, "%s %s is in use by %s: waiting for it to finish%s", what, target, who,
            f" (at most {limit:g} s, {WAIT_ENV})" if limit else "")
    if limit is None:
        fcntl.flock(fh, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + limit
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise Busy(f"{what} {target} is still in use by {holder(path)} after {limit:g} s "
                           f"({WAIT_ENV}): {advice}") from None
            time.sleep(POLL_S)


@contextlib.contextmanager
def exclusive(target: str | Path, *, what: str = "folder", wait: bool = True, level: int = logging.WARNING,
              bounded: bool = True) -> Iterator[Path]:
    """Hold the lock of `target` (a folder or file, existing or not) for the block; yields the
    lock file's path. See the module docstring for what happens when it is busy.

    level: of the one "waiting" log line; bounded=False: wait for the holder whatever
    NSCNET_LOCK_WAIT_S says (the holder makes what this process needs, e.g. a feature file).
    """
    target = Path(target)
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        _take(fh, path, target, what, wait, level, bounded)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                                 "command": _command(), "target": str(target)}))
            fh.flush()
            yield path
        finally:
            fh.seek(0)
            fh.truncate()  # nobody holds it now: no stale name for the next reader
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)


class Held:
    """A lock taken now and held until `release()` or the process ends (for objects that live
    as long as a run, e.g. a trainer's checkpointer)."""

    def __init__(self, target: str | Path, *, what: str = "folder", wait: bool = False):
        self._stack = contextlib.ExitStack()
        self.path = self._stack.enter_context(exclusive(target, what=what, wait=wait))

    def release(self) -> None:
        self._stack.close()


try:  # Optuna's journal lock protocol, with flock: a killed worker never leaves the journal locked
    from optuna.storages.journal import BaseJournalFileLock
except ImportError:  # pragma: no cover - optuna is a dependency; keep this module importable anyway
    BaseJournalFileLock = object  # type: ignore[assignment,misc]


class JournalFlock(BaseJournalFileLock):  # type: ignore[misc,valid-type]
    """Lock of an Optuna journal file for `JournalFileBackend(path, lock_obj=JournalFlock(path))`.

    Optuna's default symlink lock stays behind when its holder is SIGKILLed between taking and
    releasing it (during an append), and every other worker then waits its 30 s grace period
    before breaking it; a flock is released by the kernel at once. Appends are short: waiters
    block without a message. Lock file: `.<journal name>.nscnet-lock` beside the journal.
    """

    def __init__(self, journal: str | Path):
        self.path = lock_path(journal)
        self._local = threading.local()  # each thread its own descriptor (flock excludes them too)

    def __getstate__(self) -> dict:  # a storage sent to another process: no descriptor goes along
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._local = threading.local()

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except BaseException:
            fh.close()
            raise
        self._local.fh = fh
        return True

    def release(self) -> None:
        fh, self._local.fh = getattr(self._local, "fh", None), None
        if fh is not None:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
