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
import warnings
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


def setup(experiment: str) -> str:
    """Point MLflow at the tracking store and experiment; returns the experiment id."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
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
    """Write the run's description (`nscnet.runinfo.note`) unless the user wrote one."""
    from nscnet.runinfo import note

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
    """
    project_run = os.environ.get("MLFLOW_RUN_ID") if not run_id and mlflow.active_run() is None else None
    if project_run:
        # Launched by `mlflow run`: continue the run it created, in that run's experiment.
        mlflow.set_tracking_uri(tracking_uri())
        experiment_id = MlflowClient().get_run(project_run).info.experiment_id
        experiment = mlflow.get_experiment(experiment_id)
        mark_training_experiment(experiment)
        name = experiment.name
        if name != cfg.experiment:
            log.info("running under `mlflow run`: logging to its experiment %r (pass "
                     "--experiment-name %s to mlflow run to choose it)", name, cfg.experiment)
        mlflow.set_experiment(experiment_id=experiment_id)
    else:
        setup(cfg.experiment)
    if run_id:
        try:
            MlflowClient().get_run(run_id)
        except mlflow.exceptions.MlflowException:
            raise DataError(f"no MLflow run with id {run_id!r} in {tracking_uri()}") from None
    if system_metrics is None:
        system_metrics = step in LONG_STEPS
    all_tags = {"nscnet.step": step, **(tags or {})}
    # tags go with the run's creation (or resumption): one store round trip less than set_tags
    kwargs: dict[str, Any] = dict(run_id=run_id or None, nested=nested, log_system_metrics=system_metrics,
                                  tags={k: str(v) for k, v in all_tags.items()})
    if not run_id:
        from nscnet.runinfo import default_name

        run_name = run_name or getattr(cfg, "run_name", "") or default_name(cfg, step)
        if not project_run:  # `mlflow run` named its run already (see below)
            kwargs["run_name"] = run_name
    active = mlflow.active_run()
    if active is not None and not nested and active.info.run_id != run_id:
        kwargs["nested"] = True  # called from inside another step's run (a study trial, a demo)
    with mlflow.start_run(**kwargs) as run:
        global _last_started
        _last_started = run.info.run_id
        if not run_id and not project_run:
            _params_seen[run.info.run_id] = {}  # a new run: no params yet, no need to ask the store
        if project_run and run_name:
            from nscnet.runinfo import RANDOM_NAME

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
EFFECTIVE_TAG = "nscnet.effective."


def log_params(params: Mapping[str, Any]) -> None:
    """Log params as text; those the run already has (e.g. from `mlflow run -P`) are kept, and
    where the value in effect differs (a preset filled it in) it is tagged
    `nscnet.effective.<name>` (MLflow params cannot change)."""
    run = mlflow.active_run()
    if run is None:
        seen: dict[str, str] = {}
    else:
        seen = _params_seen.get(run.info.run_id)
        if seen is None:
            seen = _params_seen[run.info.run_id] = dict(MlflowClient().get_run(run.info.run_id).data.params)
    texts = {k: _param_text(v) for k, v in params.items()}
    clean = {k: text for k, text in texts.items() if k not in seen}
    items = list(clean.items())
    for start in range(0, len(items), 100):
        mlflow.log_params(dict(items[start:start + 100]))
    differ = {k: text for k, text in texts.items() if k in seen and seen[k] != text}
    if differ:
        mlflow.set_tags({EFFECTIVE_TAG + k: text for k, text in differ.items()})
        log.info("params in effect differ from the run's logged params (tagged %s*): %s", EFFECTIVE_TAG,
                 ", ".join(f"{k}={v}" for k, v in differ.items()))
    seen.update(clean)


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


_png_warned = False
_png_server = False


def _write_png(fig: Any, path: Path) -> None:
    """PNG through kaleido, keeping one Chromium warm per process (2 s a figure otherwise)."""
    global _png_server
    if not _png_server:
        import atexit

        import kaleido

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        _png_server = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "kopts ignored when using a server"
        fig.write_image(path, width=900, height=600)


PNG_ENV = "NSCNET_FIGURE_PNG"


def png_enabled() -> bool:
    """PNG copies of figures are on unless NSCNET_FIGURE_PNG is false (studies turn them off:
    each PNG starts a headless Chromium, seconds per figure)."""
    return os.environ.get(PNG_ENV, "true").strip().lower() not in ("0", "false", "no", "off")


def log_figure(fig: Any, name: str, *, folder: str = "figures", png: bool = True) -> None:
    """Log a plotly figure as `figures/<name>.html` and, when a renderer is there, `.png`.

    PNG export needs kaleido and a Chrome/Chromium; without them only the HTML is logged and
    one warning says why. `NSCNET_FIGURE_PNG=false` turns PNG export off.
    """
    global _png_warned
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / f"{name}.html"
        fig.write_html(html, include_plotlyjs="cdn")
        mlflow.log_artifact(str(html), artifact_path=folder)
        if png and png_enabled():
            image = Path(tmp) / f"{name}.png"
            try:
                _write_png(fig, image)
            except Exception as exc:  # kaleido or Chrome missing: HTML is still there
                if not _png_warned:
                    log.warning("PNG export of figures is off (%s); HTML figures are still logged",
                                str(exc).splitlines()[0][:200])
                    _png_warned = True
            else:
                mlflow.log_artifact(str(image), artifact_path=folder)


def log_torch_model(model: Any, name: str = "model", **kwargs: Any) -> None:
    """Log a torch module with `mlflow.pytorch.log_model` (pickled whole, CPU copy).

    `serialization_format="pickle"`: MLflow 3's default elsewhere, "pt2", needs an input example
    and a traceable forward; `kwargs` go to `log_model` (e.g. `pip_requirements`).
    """
    import mlflow.pytorch

    mlflow.pytorch.log_model(model, name=name, serialization_format="pickle", **kwargs)


def load_torch_model(run_id: str, name: str = "model", map_location: Any = "cpu") -> Any:
    """The torch module logged by `log_torch_model` in a run; DataError when there is none."""
    import mlflow.pytorch

    mlflow.set_tracking_uri(tracking_uri())
    try:
        return mlflow.pytorch.load_model(f"runs:/{run_id}/{name}", map_location=map_location)
    except mlflow.exceptions.MlflowException as exc:
        raise DataError(f"run {run_id} has no logged model {name!r} ({str(exc).splitlines()[0][:200]})") from None


def tag_run(run_id: str, tags: Mapping[str, Any]) -> None:
    """Set tags on any run by id (finished ones too), e.g. a link back from a parent run."""
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))


def experiment_name(experiment_id: str) -> str:
    """The name of an experiment of the tracking store."""
    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient().get_experiment(experiment_id).name


def get_run(run_id: str) -> Any:
    """The MLflow run with this id, or a DataError naming it."""
    mlflow.set_tracking_uri(tracking_uri())
    try:
        return MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise DataError(f"no MLflow run with id {run_id!r} in {tracking_uri()}") from None


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric of a run, in step order."""
    mlflow.set_tracking_uri(tracking_uri())
    history = MlflowClient().get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


def list_artifacts(run_id: str, path: str | None = None) -> list[str]:
    mlflow.set_tracking_uri(tracking_uri())
    return [a.path for a in MlflowClient().list_artifacts(run_id, path)]


def download_artifact(run_id: str, path: str, dst: str | Path | None = None) -> Path:
    """Download one artifact (file or folder) of a run; DataError when it is not there."""
    mlflow.set_tracking_uri(tracking_uri())
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    dst_path=str(dst) if dst else None)
    except Exception as exc:
        raise DataError(f"run {run_id} has no artifact {path!r} ({str(exc).splitlines()[0][:200]})") from None
    return Path(local)


def search_runs(experiment: str, filter_string: str = "") -> Any:
    """A pandas DataFrame of the runs of an experiment (empty when there is none)."""
    import pandas as pd

    mlflow.set_tracking_uri(tracking_uri())
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
