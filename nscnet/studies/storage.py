"""Optuna storages for studies: a journal file (one machine) or a database URL (many).

Both kinds get heartbeats: a worker records one every `heartbeat_s` seconds while it runs a
trial; a RUNNING trial whose heartbeat is older than the grace period (3 heartbeats) belongs to
a dead worker, and `optuna.storages.fail_stale_trials` marks it FAIL. Optuna's RDBStorage has
heartbeats built in; the journal storage does not (Optuna 5.0), so `HeartbeatJournalStorage`
adds them as a trial system attribute written to the journal.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from nscnet.runs.locks import JournalFlock

DEFAULT_JOURNAL = "optuna.journal"
HEARTBEAT_ATTR = "nscnet:heartbeat"


def is_url(storage: str) -> bool:
    return "://" in storage


def mask_password(storage: str) -> str:
    """The storage text with any password replaced by ***, safe to log and show."""
    if not is_url(storage):
        return storage
    from sqlalchemy.engine import make_url

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: hide everything between :// and @
        head, _, rest = storage.partition("://")
        return f"{head}://***@{rest.rpartition('@')[2]}" if "@" in rest else storage


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A JournalStorage whose running trials record heartbeats, so dead workers are detected."""

    def __init__(self, backend: Any, heartbeat_interval: int, grace_period: int) -> None:
        super().__init__(backend)
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # the trial ended between two beats

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None and trial.datetime_start is not None:
                beat = trial.datetime_start.timestamp()
            if beat is not None and now - beat > self._grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[["optuna.Study", FrozenTrial], None] | None:
        return None  # failed points are taken up again by the next worker that asks (see worker.py)


def database_url(url: str) -> str:
    """`postgresql://` with an explicit driver that is installed: SQLAlchemy 2.1 means psycopg 3
    by plain `postgresql://`, while the project depends on psycopg2-binary."""
    import importlib.util

    if url.startswith(("postgresql://", "postgres://")) and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


CONNECT_S = 10  # a database that does not answer within this is unreachable


def connect_args(url: str) -> dict[str, Any]:
    """Driver arguments bounding the connection wait (PostgreSQL and MySQL wait minutes for a
    host that drops packets otherwise)."""
    if url.startswith(("postgresql", "postgres", "mysql")):
        return {"connect_timeout": CONNECT_S}
    return {}


def open_storage(storage: str, *, heartbeat_s: int) -> BaseStorage:
    """A journal file path (created with its folder) or a database URL, with heartbeats on; a
    database that cannot be reached is a DataError naming it (password masked)."""
    grace = 3 * heartbeat_s
    if is_url(storage):
        import sqlalchemy

        from nscnet.config import DataError

        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(database_url(storage), heartbeat_interval=heartbeat_s, grace_period=grace,
                                      engine_kwargs={"pool_pre_ping": True, "connect_args": connect_args(storage)})
            except sqlalchemy.exc.SQLAlchemyError as exc:
                # two workers creating Optuna's tables in a new database at once: one of them meets
                # the other's half-made schema (duplicate key in pg_type); the tables exist a moment later
                racing = isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError))
                if racing and attempt < 4:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
                raise DataError(f"cannot connect to the Optuna storage {mask_password(storage)}: {reason}") from None
    path = Path(storage or DEFAULT_JOURNAL)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a flock, not Optuna's symlink lock: a worker killed during an append leaves no lock behind
    backend = JournalFileBackend(str(path), lock_obj=JournalFlock(path))
    return HeartbeatJournalStorage(backend, heartbeat_s, grace)


def cache_root(storage: str, study_name: str) -> Path:
    """Where a study's reusable features live: beside a journal file, else in the temp dir."""
    import tempfile

    if is_url(storage):
        return Path(tempfile.gettempdir()) / "nscnet-features" / study_name
    path = Path(storage or DEFAULT_JOURNAL).resolve()
    return path.parent / f"{path.name}.cache" / study_name
