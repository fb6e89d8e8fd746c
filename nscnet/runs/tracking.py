"""The only module that talks to MLflow.

Default store: `sqlite:///<working dir>/mlflow.db` with artifacts in `<working dir>/mlartifacts`,
unless `MLFLOW_TRACKING_URI` is set (an `mlflow server` URL, another database, ...). Every
step opens its run through `start_run`, logs through the helpers here, and never imports mlflow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from nscnet.config import DataError, to_params  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
LONG_STEPS = frozenset({"preprocess", "nscnet", "vaenet", "pretrain"})


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else the SQLite store of the working directory."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd() / DEFAULT_DB}"


def _artifact_root(uri: str) -> str | None:
    """Artifact location for new experiments in a local SQLite store: beside the database."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent / DEFAULT_ARTIFACTS).resolve().as_uri()
    return None  # a server or remote database chooses its own


CONNECT_S = 10  # a tracking server or database that does not answer within this is unreachable
_answering: set[str] = set()  # tracking URIs checked in this process


def masked_uri(uri: str) -> str:
    """The URI with any password replaced by ***, safe to show."""
    from nscnet.studies.storage import mask_password

    return mask_password(uri)


def check_store(uri: str) -> None:
    """DataError, in one line naming the URI (password masked), when the tracking store cannot
    be reached within CONNECT_S: a server that refuses or does not answer, a database that
    refuses the connection, a SQLite file whose folder cannot be made. MLflow itself would
    retry for minutes (HTTP) or about half an hour (SQLAlchemy) before failing."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(uri)
    shown = masked_uri(uri)
    if parsed.scheme in ("http", "https"):
        import urllib.request

        if parsed.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(parsed.hostname or ""):
            return  # reached through a proxy: a direct probe would say nothing
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname or "localhost", port), timeout=CONNECT_S).close()
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise DataError(f"the MLflow tracking server {shown} does not answer ({reason}): start it, or "
                            f"point MLFLOW_TRACKING_URI at one that runs") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as exc:
            raise DataError(f"the MLflow tracking store {shown} cannot be created in {folder} "
                            f"({exc.strerror or exc})") from None
    elif "://" in uri and parsed.scheme.split("+")[0] in ("postgresql", "postgres", "mysql", "mssql"):
        import sqlalchemy

        from nscnet.studies.storage import connect_args, database_url

        engine = sqlalchemy.create_engine(database_url(uri), connect_args=connect_args(uri))
        try:
            engine.connect().close()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
            raise DataError(f"cannot connect to the MLflow tracking store {shown}: {reason}") from None
        finally:
            engine.dispose()


def connect() -> str:
    """Point MLflow at the tracking store (checked once per process, see `check_store`)."""
    uri = tracking_uri()
    if uri not in _answering:
        check_store(uri)
        _answering.add(uri)
    mlflow.set_tracking_uri(uri)
    return uri


_writable: set[str] = set()  # experiments whose artifact location was checked in this process


def check_artifact_location(experiment_id: str) -> None:
    """DataError naming the location when an experiment's local artifact folder cannot be
    written, before any run is opened (remote artifact stores are left to MLflow)."""
    key = f"{tracking_uri()}#{experiment_id}"
    if key in _writable:
        return
    experiment = MlflowClient().get_experiment(experiment_id)
    location = experiment.artifact_location
    folder = _local_folder(location)
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".nscnet-write-check-"):
                pass
        except OSError as exc:
            raise DataError(f"the artifact location {masked_uri(location)} of experiment {experiment.name!r} "
                            f"cannot be written ({exc.strerror or exc})") from None
    _writable.add(key)


def setup(experiment: str) -> str:
    """Point MLflow at the tracking store and experiment; returns the experiment id."""
    uri = connect()
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
        mark_training_experiment(found)
    else:
        root = _artifact_root(uri)
        location = f"{root}/{experiment}" if root else None
        try:
            # the kind tag makes the MLflow UI open on its training-runs view, not the GenAI one
            experiment_id = mlflow.create_experiment(experiment, artifact_location=location,
                                                     tags={EXPERIMENT_KIND_TAG: "custom_model_development"})
        except mlflow.exceptions.MlflowException:  # created by a concurrent worker meanwhile
            experiment_id = mlflow.get_experiment_by_name(experiment).experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


TRAINING_KIND = "custom_model_development"
UI_PORT = 5000  # where `nscnet ui` serves the MLflow UI of a local store
# MLflow 3.17's UI picks what an experiment opens on from a browser-wide "workflow type"
# (localStorage `mlflow.workflowType`, "genai" in a fresh browser), not from the experiment's
# kind tag; the `workflowType` URL parameter overrides it, and the UI keeps it while one moves
# between an experiment's tabs. The tag is still set: older 3.x UIs and the API read it.
UI_QUERY = "workflowType=machine_learning"


EXPERIMENT_NOTE = (
    "nscnet runs: one per step, named by what ran (`basenet pca64 kmeans k=8`, `study demo-basenet #012 k=8`); "
    "each run's description lists its data, N, headline metrics and links to its figures and exports.\n\n"
    "Charts: in the charts view (the second button above the runs) type `silhouette` or `nmi_truth` into "
    "*Search metric charts*; studies nest their trials under the study run (expand it with +).")


def mark_training_experiment(experiment: Any) -> None:
    """Tag an experiment (e.g. one `mlflow run` created) as model training, once, and give it
    a short description (its `mlflow.note.content`) when it has none."""
    tags = {}
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:
        tags[EXPERIMENT_KIND_TAG] = TRAINING_KIND
    if not experiment.tags.get("mlflow.note.content"):
        tags["mlflow.note.content"] = EXPERIMENT_NOTE
    for key, value in tags.items():
        try:
            MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
        except mlflow.exceptions.MlflowException as exc:  # e.g. no permission: the UI still works
            log.debug("cannot tag experiment %s: %s", experiment.experiment_id, exc)


def ui_base() -> str:
    """The MLflow UI's address: the tracking server, or where `nscnet ui` serves a local store."""
    uri = tracking_uri()
    return uri.rstrip("/") if uri.startswith("http") else f"http://127.0.0.1:{UI_PORT}"


def experiment_page(experiment_id: str, *, charts: bool = False) -> str:
    """Path (after the UI's address) of an experiment's training runs, optionally as charts."""
    mode = "&compareRunsMode=CHART" if charts else ""
    return f"/#/experiments/{experiment_id}/runs?{UI_QUERY}{mode}"


def run_link(experiment_id: str, run_id: str, base: str | None = None) -> str:
    """The address of a run's page in the MLflow UI (`ui_base()` unless `base` is given)."""
    return f"{(base or ui_base()).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{UI_QUERY}"


def ui_landing(experiment: str, base: str | None = None) -> str:
    """Where `nscnet ui` sends the browser: the charts of `experiment`'s training runs (every
    experiment of the store is tagged as model training first, `mark_training_experiment`);
    when there is no experiment of that name, the one updated last; with none, the list."""
    mlflow.set_tracking_uri(tracking_uri())
    base = (base or ui_base()).rstrip("/")
    experiments = MlflowClient().search_experiments()
    for each in experiments:
        mark_training_experiment(each)
    found = next((e for e in experiments if e.name == experiment), None)
    if found is None:
        found = max(experiments, key=lambda e: (e.experiment_id != "0", e.last_update_time or 0), default=None)
    if found is None:
        return f"{base}/#/experiments?{UI_QUERY}"
    return base + experiment_page(found.experiment_id, charts=True)


NOTE_TAG = "mlflow.note.content"
NOTE_AUTO_TAG = "nscnet.note_auto"


def _describe_run(run_id: str, step: str) -> None:
    """Write the run's description (`nscnet.runs.runinfo.note`) unless the user wrote one."""
    from nscnet.runs.runinfo import note

    client = MlflowClient()
    run = client.get_run(run_id)
    tags = run.data.tags
    if tags.get(NOTE_TAG) and not tags.get(NOTE_AUTO_TAG):
        return  # the user's own description stays
    artifacts = [a.path for a in client.list_artifacts(run_id)]
    if "figures" in artifacts:
        artifacts += [a.path for a in client.list_artifacts(run_id, "figures")]
    link = f"#/experiments/{run.info.experiment_id}/runs/{run_id}"  # relative: works on any UI address
    text = note(name=run.info.run_name or step, step=step, params=run.data.params, metrics=run.data.metrics,
                tags=tags, artifacts=artifacts, run_link=link)
    client.set_tag(run_id, NOTE_TAG, text)
    client.set_tag(run_id, NOTE_AUTO_TAG, "true")


@contextlib.contextmanager
def start_run(cfg: Any, step: str, *, run_id: str | None = None, nested: bool = False,
              run_name: str | None = None, tags: Mapping[str, str] | None = None,
              system_metrics: bool | None = None, log_config: bool = True) -> Iterator[Any]:
    """Open (or resume, with `run_id`) the MLflow run of one step; params logged from `cfg`.

    system_metrics: sample CPU, memory (and GPU through pynvml) into `system/*` metrics;
    by default on for the long steps (LONG_STEPS).

    A run that raises is marked FAILED and re-raises; KeyboardInterrupt marks it KILLED.
    A process killed outright (SIGKILL, power loss) cannot close its run: every run is tagged
    with its process (`nscnet.pid`, `nscnet.pid_started`, `nscnet.host`), and a step starting
    (or resuming) a top-level run first marks KILLED the store's RUNNING runs whose process on
    this host is gone (tagged `nscnet.ended_by`).
    """
    project_run = os.environ.get("MLFLOW_RUN_ID") if not run_id and mlflow.active_run() is None else None
    if project_run:
        # Launched by `mlflow run`: continue the run it created, in that run's experiment.
        connect()
        experiment_id = MlflowClient().get_run(project_run).info.experiment_id
        experiment = mlflow.get_experiment(experiment_id)
        mark_training_experiment(experiment)
        name = experiment.name
        if name != cfg.experiment:
            log.info("running under `mlflow run`: logging to its experiment %r (pass "
                     "--experiment-name %s to mlflow run to choose it)", name, cfg.experiment)
        mlflow.set_experiment(experiment_id=experiment_id)
    else:
        experiment_id = setup(cfg.experiment)
    check_artifact_location(experiment_id)
    if run_id:
        try:
            MlflowClient().get_run(run_id)
        except mlflow.exceptions.MlflowException:
            raise DataError(f"no MLflow run with id {run_id!r} in {tracking_uri()}") from None
    if system_metrics is None:
        system_metrics = step in LONG_STEPS
    active = mlflow.active_run()
    if active is None:  # top-level runs only: a study trial's worker has swept already
        _end_runs_of_dead_processes(keep=run_id)
    all_tags = {"nscnet.step": step, **_process_tags(), **(tags or {})}
    # tags go with the run's creation (or resumption): one store round trip less than set_tags
    kwargs: dict[str, Any] = dict(run_id=run_id or None, nested=nested, log_system_metrics=system_metrics,
                                  tags={k: str(v) for k, v in all_tags.items()})
    if not run_id:
        from nscnet.runs.runinfo import default_name

        run_name = run_name or getattr(cfg, "run_name", "") or default_name(cfg, step)
        if not project_run:  # `mlflow run` named its run already (see below)
            kwargs["run_name"] = run_name
    if active is not None and not nested and active.info.run_id != run_id:
        kwargs["nested"] = True  # called from inside another step's run (a study trial, a demo)
    opened: list[str] = []
    with _png_after_run(opened), mlflow.start_run(**kwargs) as run:
        global _last_started
        _last_started = run.info.run_id
        opened.append(run.info.run_id)
        if not run_id and not project_run:
            _params_seen[run.info.run_id] = {}  # a new run: no params yet, no need to ask the store
        if project_run and run_name:
            from nscnet.runs.runinfo import RANDOM_NAME

            if getattr(cfg, "run_name", "") or RANDOM_NAME.match(run.info.run_name or ""):
                mlflow.set_tag("mlflow.runName", run_name)  # `mlflow run` named it at random
        try:
            if log_config and not run_id:
                log_params(to_params(cfg))
            yield run
            try:
                _describe_run(run.info.run_id, step)
            except Exception as exc:  # a description must never fail the run it describes
                log.warning("run description not written: %s", str(exc).splitlines()[0][:200])
        except KeyboardInterrupt:
            mlflow.end_run(status="KILLED")
            raise
        except BaseException:
            mlflow.end_run(status="FAILED")
            raise


@contextlib.contextmanager
def _png_after_run(opened: list[str]) -> Iterator[None]:
    """Start the PNG worker of the run whose id the body appends to `opened`, once it has ended."""
    try:
        yield
    finally:
        for run_id in opened:
            _start_png_worker(run_id)


PID_TAG, PID_STARTED_TAG, HOST_TAG, ENDED_BY_TAG = "nscnet.pid", "nscnet.pid_started", "nscnet.host", "nscnet.ended_by"


def _process_tags() -> dict[str, str]:
    """This process, as run tags: pid, its start time (a reused pid is told apart), host."""
    import socket

    import psutil

    return {PID_TAG: str(os.getpid()), PID_STARTED_TAG: f"{psutil.Process().create_time():.3f}",
            HOST_TAG: socket.gethostname()}


def process_alive(pid: str | int, started: str | float | None = None) -> bool:
    """Whether the process `pid` of this host still runs (and, given `started`, is the same one)."""
    import psutil

    try:
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # killed, not yet reaped by its parent
        if started not in (None, ""):
            return abs(process.create_time() - float(started)) < 1.0
        return True
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.AccessDenied:  # another user's live process
        return True


def _end_runs_of_dead_processes(keep: str | None = None) -> list[str]:
    """Mark KILLED the RUNNING runs of the store started by a process of this host that is gone.

    Runs without process tags (other tools, older versions) and runs of other hosts are left as
    they are: only a process on this host can be checked. Never fails the step: a store that
    cannot be searched only leaves the runs as they were (logged at debug level).
    """
    import socket

    host = socket.gethostname()
    ended: list[str] = []
    try:
        client = MlflowClient()
        experiments = [e.experiment_id for e in client.search_experiments()]
        if not experiments:
            return ended
        query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
        for run in client.search_runs(experiments, filter_string=query, max_results=1000):
            tags = run.data.tags
            if run.info.run_id == keep or PID_TAG not in tags:
                continue
            if process_alive(tags[PID_TAG], tags.get(PID_STARTED_TAG)):
                continue
            note = (f"process {tags[PID_TAG]} on {host} ended without closing the run; marked KILLED by "
                    f"process {os.getpid()} at {time.strftime('%Y-%m-%d %H:%M:%S')}")
            client.set_tag(run.info.run_id, ENDED_BY_TAG, note)
            client.set_terminated(run.info.run_id, status="KILLED")
            ended.append(run.info.run_id)
            log.info("run %s (%s, pid %s) was left RUNNING by a process that is gone: marked KILLED",
                     run.info.run_id, tags.get("nscnet.step", "?"), tags[PID_TAG])
    except Exception as exc:  # the sweep is housekeeping: never the reason a step fails
        log.debug("stale-run sweep skipped: %s", exc)
    return ended


def active_run_id() -> str | None:
    run = mlflow.active_run()
    return run.info.run_id if run else None


def _param_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as MLproject and the CLI spell them
    return str(value)[:6000]


# run id -> names of the params it holds: the store is asked once per resumed run, never per call
_params_seen: dict[str, dict[str, str]] = {}


def log_params(params: Mapping[str, Any]) -> None:
    """Log params as text; those the run already has (e.g. from `mlflow run -P`, which passes
    the same values to the step) are kept as they are (MLflow params cannot change)."""
    run = mlflow.active_run()
    if run is None:
        seen: dict[str, str] = {}
    else:
        seen = _params_seen.get(run.info.run_id)
        if seen is None:
            seen = _params_seen[run.info.run_id] = dict(MlflowClient().get_run(run.info.run_id).data.params)
    clean = {k: _param_text(v) for k, v in params.items() if k not in seen}
    items = list(clean.items())
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start:start + 100]))
    seen.update(clean)


def project_experiment() -> str | None:
    """Name of the experiment of the run `mlflow run` created for this process (MLFLOW_RUN_ID),
    where `start_run` logs; None when not launched by `mlflow run` (or that run is not found)."""
    project_run = os.environ.get("MLFLOW_RUN_ID")
    if not project_run:
        return None
    mlflow.set_tracking_uri(tracking_uri())
    try:
        experiment_id = MlflowClient().get_run(project_run).info.experiment_id
    except mlflow.exceptions.MlflowException:
        return None
    return mlflow.get_experiment(experiment_id).name


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log numeric metrics; None and non-finite values are skipped (missing, never faked)."""
    clean = {}
    for key, value in metrics.items():
        if value is None:
            continue
        value = float(value)
        if math.isfinite(value):
            clean[key] = value
    if clean:
        mlflow.log_metrics(clean, step=step)


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_artifacts(folder: str | Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifacts(str(folder), artifact_path=artifact_path)


def _local_folder(uri: str) -> Path | None:
    """The local folder behind an artifact URI (`file://...` or a plain path), else None."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    return None


@contextlib.contextmanager
def artifact_dir(artifact_path: str | None = None) -> Iterator[Path]:
    """A folder whose files become artifacts of the active run (under `artifact_path`).

    With a local artifact store it is the run's own artifact folder, so each file is written
    once instead of written and then copied (hundreds of small label tracks per run; this
    matters for study trials); otherwise a temporary folder, uploaded in one `log_artifacts`
    call when the block ends without an error.
    """
    local = _local_folder(mlflow.get_artifact_uri(artifact_path))
    if local is not None:
        local.mkdir(parents=True, exist_ok=True)
        yield local
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)
        log_artifacts(tmp, artifact_path)


def log_dict(data: Mapping[str, Any], artifact_file: str) -> None:
    mlflow.log_dict(json.loads(json.dumps(data, default=str)), artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


PNG_ENV = "NSCNET_FIGURE_PNG"
PNG_START_ENV = "NSCNET_PNG_START_S"
PNG_START_S = 30.0  # at most this long for one try at starting Chromium (2 s idle here; CI once took >20 s)
PNG_START_TRIES = 2  # a start that times out is killed and tried once more before PNGs are given up
PNG_FIGURE_S = 15.0  # at most this long for one figure once it runs (well under 1 s normally)
PNG_HOWTO = (f"install Chrome or Chromium for kaleido (Debian: apt-get install chromium; any OS: "
             f"plotly_get_chrome), or set {PNG_ENV}=false to skip PNGs without this warning")


def png_start_s() -> float:
    """How long Chromium may take to start: NSCNET_PNG_START_S seconds, else PNG_START_S."""
    value = os.environ.get(PNG_START_ENV, "").strip()
    try:
        return float(value) if value and float(value) > 0 else PNG_START_S
    except ValueError:
        return PNG_START_S


def png_enabled() -> bool:
    """PNG copies of figures are on unless NSCNET_FIGURE_PNG is false (studies turn them off:
    each PNG starts a headless Chromium, seconds per figure)."""
    return os.environ.get(PNG_ENV, "true").strip().lower() not in ("0", "false", "no", "off")


def find_browser() -> str | None:
    """The Chrome/Chromium kaleido would start (BROWSER_PATH, PATH, the usual install paths such
    as /usr/bin/chromium, kaleido's own download), or None."""
    from choreographer.browsers.chromium import Chromium

    return Chromium.find_browser(skip_local=False)


class _PngRenderer:
    """One kaleido Chromium per process, driven from a private event-loop thread so that every
    wait is bounded: a browser that does not start or answer in time is killed and given up."""

    def __init__(self) -> None:
        import asyncio
        import threading

        self.pid = os.getpid()
        self.kaleido: Any = None
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="nscnet-png", daemon=True).start()

    def _wait(self, coroutine: Any, timeout: float) -> Any:
        import asyncio
        import concurrent.futures

        async def outcome() -> tuple[bool, Any]:  # errors as values: none is left unretrieved
            try:
                return True, await coroutine
            except Exception as exc:
                return False, exc

        future = asyncio.run_coroutine_threadsafe(outcome(), self.loop)
        try:
            ok, value = future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the browser did not answer within {timeout:g} s") from None
        if not ok:
            raise value
        return value

    def start(self, browser: str) -> None:
        async def open_browser() -> None:
            import kaleido

            # plotly.js from the installed plotly package, no MathJax: nothing from a CDN
            self.kaleido = kaleido.Kaleido(path=browser, mathjax=False, timeout=PNG_FIGURE_S)
            await self.kaleido.open()

        self._wait(open_browser(), png_start_s())

    def render(self, fig: Any, path: Path) -> None:
        opts = {"format": "png", "width": 900, "height": 600}
        path.write_bytes(self._wait(self.kaleido.calc_fig(fig.to_dict(), opts=opts), PNG_FIGURE_S))

    def close(self, *, kill: bool = False) -> None:
        """Close the browser (bounded; `kill`: kill it first, it is given up), stop the loop."""
        browser, self.kaleido = self.kaleido, None
        process = getattr(browser, "subprocess", None)
        try:
            if kill:
                _kill_group(process)
            if browser is not None:
                with contextlib.suppress(Exception):
                    self._wait(browser.close(), 2 if kill else 10)
            _kill_group(process)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)


def _kill_group(process: Any) -> None:
    """SIGKILL a browser's process group (choreographer starts it in a session of its own,
    through a wrapper process, so killing the wrapper alone would leave the browser)."""
    import signal

    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        process.wait(2)


_png: _PngRenderer | None = None
_png_off: str | None = None  # why PNG export was given up in this process (warned once)


def _png_give_up(reason: str) -> None:
    global _png, _png_off
    _png_off = reason
    log.warning("PNG copies of figures are off for this process: %s; HTML figures are still logged. "
                "To get PNGs, %s", reason, PNG_HOWTO)
    if _png is not None:
        _png.close(kill=True)
        _png = None


def _write_png(fig: Any, path: Path) -> bool:
    """Write a PNG of `fig` through kaleido, keeping one Chromium warm per process (seconds a
    figure otherwise); False, after one warning for the whole process, when there is no usable
    browser (none found, it fails, or it does not answer within PNG_START_S / PNG_FIGURE_S)."""
    global _png
    if _png_off is not None:
        return False
    if _png is not None and _png.pid != os.getpid():
        _png = None  # a forked child: the parent's loop thread and browser are not ours
    try:
        if _png is None:
            browser = find_browser()
            if browser is None:
                _png_give_up("no Chrome or Chromium found (kaleido needs one)")
                return False
            import atexit

            for attempt in range(1, PNG_START_TRIES + 1):
                _png = _PngRenderer()
                atexit.register(lambda renderer=_png: renderer.close())
                try:
                    _png.start(browser)
                    break
                except TimeoutError:
                    if attempt == PNG_START_TRIES:
                        raise
                    log.info("Chromium did not start within %g s; killed, trying once more", png_start_s())
                    _png.close(kill=True)
        _png.render(fig, path)
        return True
    except Exception as exc:  # the browser failed, died or hung: HTML is still there
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        _png_give_up(f"the PNG renderer failed ({type(exc).__name__}: {first})")
        return False


def log_figure(fig: Any, name: str, *, folder: str = "figures", png: bool = True) -> None:
    """Log a plotly figure as `figures/<name>.html` and, when a renderer is there, `.png`.

    The HTML is self-contained (plotly.js inlined, ~4.7 MB): the MLflow UI shows HTML artifacts
    in a sandboxed iframe built from the file's text, where no second file can be loaded, and
    it must open without a network. PNG export needs kaleido and a Chrome/Chromium; without a
    usable one only the HTML is logged and one warning per process says how to get PNGs.
    `NSCNET_FIGURE_PNG=false` turns PNG export off.
    """
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / f"{name}.html"
        fig.write_html(html, include_plotlyjs=True, full_html=True)
        mlflow.log_artifact(str(html), artifact_path=folder)
        if png and png_enabled():
            active = mlflow.active_run()
            if active is not None and _png_off is None:
                _queue_png(active.info.run_id, fig, name, folder)
            else:
                image = Path(tmp) / f"{name}.png"
                if _write_png(fig, image):
                    mlflow.log_artifact(str(image), artifact_path=folder)


# PNGs of figures logged inside a run are rendered after the run by `nscnet.runs.pngjob` (a detached
# process): Chromium's start and the renders cost more than a BASENet run's arithmetic.
_png_spools: dict[str, Path] = {}   # run id -> its spool folder (figures queued, worker not started)
_png_workers: list[Any] = []        # the workers this process started (subprocess.Popen)


def _queue_png(run_id: str, fig: Any, name: str, folder: str) -> None:
    """Queue one figure's PNG for the run's worker; warns once (as `_write_png`) without a browser."""
    from nscnet.runs import pngjob

    spool = _png_spools.get(run_id)
    if spool is None:
        if find_browser() is None:
            _png_give_up("no Chrome or Chromium found (kaleido needs one)")
            return
        root = pngjob.spool_root()
        root.mkdir(parents=True, exist_ok=True)
        spool = Path(tempfile.mkdtemp(prefix=f"{run_id}-", dir=root))
        (spool / pngjob.RUN_FILE).write_text(run_id)
        _png_spools[run_id] = spool
    index = len(list(spool.glob("*.json")))
    file = f"{index:03d}.json"
    (spool / file).write_text(fig.to_json())
    with open(spool / pngjob.MANIFEST, "a") as manifest:
        manifest.write(json.dumps({"file": file, "folder": folder, "name": name}) + "\n")


def _start_png_worker(run_id: str) -> None:
    """Start the detached PNG worker of a run that queued figures (after the run has ended)."""
    import subprocess
    import sys

    from nscnet.runs import pngjob

    spool = _png_spools.pop(run_id, None)
    if spool is None:
        return
    if pngjob.serving():  # one `pngjob --serve` worker draws the spools of many runs (the demo)
        (spool / pngjob.READY).write_text(run_id)
        return
    package_parent = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(),
           "PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)}
    _png_workers.append(subprocess.Popen([sys.executable, "-m", "nscnet.runs.pngjob", str(spool)], env=env,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         start_new_session=True))


def wait_for_pngs(timeout: float = 120.0) -> bool:
    """Wait for the PNG workers this process started (tests, scripts that read PNGs at once);
    True when all have finished within `timeout` seconds."""
    import subprocess

    deadline = time.monotonic() + timeout
    for worker in list(_png_workers):
        try:
            worker.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return False
        _png_workers.remove(worker)
    return True


def _start_all_png_workers() -> None:
    for run_id in list(_png_spools):
        _start_png_worker(run_id)


import atexit  # noqa: E402

atexit.register(_start_all_png_workers)  # figures queued in runs not opened by start_run


MODEL_FORMAT = "nscnet.model"  # model.json "format"; version below
MODEL_FORMAT_VERSION = 1
MODEL_FILES = ("model.json", "weights.pt", "arrays.npz")


def log_torch_model(description: Mapping[str, Any], state_dict: Mapping[str, Any] | None = None,
                    arrays: Mapping[str, Any] | None = None, name: str = "model") -> None:
    """Log a model to the active run under `name/`, in one upload, with no pickled object:
    `model.json` (the description, with format and version), `weights.pt` (`torch.save` of a
    plain state dict of tensors) and `arrays.npz` (numpy arrays, read without pickle)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        full = {"format": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION, **description}
        (tmp / "model.json").write_text(json.dumps(full, indent=2, default=_json_default))
        if state_dict is not None:
            import torch

            torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, tmp / "weights.pt")
        if arrays:
            np.savez(tmp / "arrays.npz", **{k: np.asarray(v) for k, v in arrays.items()})
        mlflow.log_artifacts(str(tmp), artifact_path=name)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def load_torch_model(run_id: str, name: str = "model") -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
    """(description, state dict or None, arrays) of the model `log_torch_model` logged in a run.

    The state dict is read with `torch.load(..., weights_only=True)` and the arrays with
    `numpy.load(..., allow_pickle=False)`: nothing is unpickled. DataError when the run has no
    such model (naming an older format when the run holds one), or a file needs pickle.
    """
    import numpy as np

    get_run(run_id)
    names = set(list_artifacts(run_id, name))
    if f"{name}/model.json" not in names:
        old = [path for path in ("model_state", "pretrained", "predict") if path in set(list_artifacts(run_id))]
        old += [f"{name}/MLmodel"] if f"{name}/MLmodel" in names else []
        if old:
            raise DataError(f"run {run_id} holds its model in the old format ({', '.join(old)}: pickled module "
                            f"or joblib files), which is no longer read because loading it runs pickle; "
                            f"train the run again with this version (it saves {name}/model.json + weights.pt)")
        raise DataError(f"run {run_id} has no saved model ({name}/model.json)")
    folder = download_artifact(run_id, name)
    description = json.loads((folder / "model.json").read_text())
    if description.get("format") != MODEL_FORMAT or description.get("version") != MODEL_FORMAT_VERSION:
        raise DataError(f"run {run_id}: {name}/model.json has format {description.get('format')!r} version "
                        f"{description.get('version')!r}; this version reads {MODEL_FORMAT!r} version "
                        f"{MODEL_FORMAT_VERSION}")
    state = None
    if (folder / "weights.pt").exists():
        import torch

        try:
            state = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DataError(f"run {run_id}: {name}/weights.pt is not a plain state dict (loading it with "
                            f"weights_only=True failed: {str(exc).splitlines()[0][:200]})") from None
    arrays: dict[str, Any] = {}
    if (folder / "arrays.npz").exists():
        try:
            with np.load(folder / "arrays.npz", allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except ValueError as exc:
            raise DataError(f"run {run_id}: {name}/arrays.npz holds objects that need pickle ({exc})") from None
    return description, state, arrays


def tag_run(run_id: str, tags: Mapping[str, Any]) -> None:
    """Set tags on any run by id (finished ones too), e.g. a link back from a parent run."""
    connect()
    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))


def log_artifact_to(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file or folder to any run by id (a finished one too) without resuming it: its status,
    tags and params stay as they are (e.g. a report added to a clustering run)."""
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    if Path(path).is_dir():
        client.log_artifacts(run_id, str(path), artifact_path)
    else:
        client.log_artifact(run_id, str(path), artifact_path)


def experiment_name(experiment_id: str) -> str:
    """The name of an experiment of the tracking store."""
    connect()
    return MlflowClient().get_experiment(experiment_id).name


def get_run(run_id: str) -> Any:
    """The MLflow run with this id, or a DataError naming it."""
    connect()
    try:
        return MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise DataError(f"no MLflow run with id {run_id!r} in {tracking_uri()}") from None


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric of a run, in step order."""
    connect()
    history = MlflowClient().get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


def list_artifacts(run_id: str, path: str | None = None) -> list[str]:
    connect()
    return [a.path for a in MlflowClient().list_artifacts(run_id, path)]


def download_artifact(run_id: str, path: str, dst: str | Path | None = None) -> Path:
    """Download one artifact (file or folder) of a run; DataError when it is not there."""
    connect()
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    dst_path=str(dst) if dst else None)
    except Exception as exc:
        raise DataError(f"run {run_id} has no artifact {path!r} ({str(exc).splitlines()[0][:200]})") from None
    return Path(local)


def search_runs(experiment: str, filter_string: str = "") -> Any:
    """A pandas DataFrame of the runs of an experiment (empty when there is none)."""
    import pandas as pd

    connect()
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return pd.DataFrame()
    return mlflow.search_runs(experiment_ids=[found.experiment_id], filter_string=filter_string)


def run_url(run: Any) -> str:
    """Where to look at a run: a server URL, or the `mlflow ui` command for a local store."""
    uri = tracking_uri()
    path = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    if uri.startswith("http"):
        return f"{uri.rstrip('/')}/{path}"
    return f"mlflow ui --backend-store-uri {uri}  then open http://127.0.0.1:5000/{path}"


_last_started: str | None = None


def last_run_id() -> str | None:
    """Id of the run that `start_run` opened last in this process (e.g. a study trial's run)."""
    return _last_started
