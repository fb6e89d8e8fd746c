"""Dashboards: `nscnet ui` (MLflow UI + Optuna dashboard) and the runs comparison page.

- `run_ui(cfg)`: starts `mlflow server` on the tracking store of `nscnet.runs.tracking.tracking_uri()`
  and `optuna-dashboard` on the study storage, both bound to 127.0.0.1 unless `--host` says
  otherwise, prints both URLs and one line on who can reach them once they answer, and stops
  both on Ctrl-C or SIGTERM. `mlflow_command` / `dashboard_command` build the two command lines;
  who may reach what (host and origin checks, `--auth` logins) is `nscnet.ui.access`.
- `comparison_figure(experiment)`: one plotly figure comparing the runs of an experiment:
  silhouette, n_clusters, zipf_s and the *_truth metrics (one point per run), nmi_prev curves;
  `write_comparison` writes it as a self-contained HTML page (plotly.js inlined, so it opens
  without a network) and `log_comparison` logs it to the active run (never into a checkout).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from nscnet.config import ConfigError, UiConfig
from nscnet.runs import tracking
from nscnet.studies.storage import DEFAULT_JOURNAL, database_url, is_url, mask_password
from nscnet.ui import access

log = logging.getLogger(__name__)

POINT_METRICS = ("silhouette", "n_clusters", "zipf_s", "nmi_truth", "ari_truth", "v_measure_truth",
                 "homogeneity_truth", "completeness_truth")
CURVE_METRICS = ("nmi_prev",)
COMPARISON_PAGE = "comparison.html"


# ------------------------------------------------------------------------ comparison page

def comparison_data(experiment: str) -> tuple[Any, dict[str, dict[str, list[tuple[int, float]]]]]:
    """(runs DataFrame sorted by start time, {curve metric: {run label: [(step, value)]}})."""
    runs = tracking.search_runs(experiment)
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {m: {} for m in CURVE_METRICS}
    if runs.empty:
        return runs, curves
    runs = runs.sort_values("start_time").reset_index(drop=True)
    names = runs.get("tags.mlflow.runName", runs["run_id"]).fillna("")
    runs["label"] = [f"{name or 'run'} [{run_id[:6]}]" for name, run_id in zip(names, runs["run_id"])]
    for metric in CURVE_METRICS:
        column = f"metrics.{metric}"
        if column not in runs:
            continue
        for _, row in runs[runs[column].notna()].iterrows():
            curves[metric][row["label"]] = tracking.metric_history(row["run_id"], metric)
    return runs, curves


def comparison_figure(experiment: str) -> Any:
    """Plotly figure: one panel per metric present; a point per run, or a curve per run (nmi_prev)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    runs, curves = comparison_data(experiment)
    point_panels = [m for m in POINT_METRICS if f"metrics.{m}" in runs and runs[f"metrics.{m}"].notna().any()]
    curve_panels = [m for m in CURVE_METRICS if curves[m]]
    panels = point_panels + curve_panels
    if not panels:
        fig = go.Figure()
        fig.update_layout(title=f"Experiment {experiment!r}: no run with comparable metrics yet")
        return fig
    fig = make_subplots(rows=len(panels), cols=1, subplot_titles=panels, vertical_spacing=0.25 / len(panels))
    for row, metric in enumerate(point_panels, start=1):
        have = runs[runs[f"metrics.{metric}"].notna()]
        step = have["tags.nscnet.step"].fillna("") if "tags.nscnet.step" in have else [""] * len(have)
        fig.add_trace(go.Scatter(x=have["label"], y=have[f"metrics.{metric}"], mode="markers", name=metric,
                                 text=step, hovertemplate="%{x}<br>%{text}<br>" + metric + "=%{y:.4g}<extra></extra>",
                                 marker={"size": 9}, showlegend=False), row=row, col=1)
        fig.update_yaxes(title_text=metric, row=row, col=1)
    for offset, metric in enumerate(curve_panels, start=len(point_panels) + 1):
        for label, history in curves[metric].items():
            steps, values = zip(*history) if history else ((), ())
            fig.add_trace(go.Scatter(x=list(steps), y=list(values), mode="lines", name=label, legendgroup=label),
                          row=offset, col=1)
        fig.update_xaxes(title_text="epoch", row=offset, col=1)
        fig.update_yaxes(title_text=metric, row=offset, col=1)
    fig.update_layout(title=f"Runs of experiment {experiment!r} ({len(runs)} runs)",
                      height=max(420, 320 * len(panels)), template="plotly_white")
    return fig


def write_comparison(experiment: str, out: str | Path) -> Path:
    """Write the comparison page of `experiment` to `out` (plotly.js inlined: works offline)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    comparison_figure(experiment).write_html(out, include_plotlyjs=True, full_html=True)
    return out


def comparison_name(experiment: str) -> str:
    """File name of an experiment's comparison page (as written and as logged)."""
    return f"{experiment}-comparison.html"


def log_comparison(experiment: str, out: str | Path | None = None) -> Path:
    """Log the page to the active run as `dashboards/<experiment>-comparison.html` (and write it
    to `out` too when given); with no active run, write it to `out` or the working directory.
    Nothing goes into a checkout's `dashboards/` folder: the page lives with the run."""
    name = comparison_name(experiment)
    if not tracking.active_run_id():
        page = write_comparison(experiment, Path(out) if out else Path.cwd() / name)
    else:
        with tracking.artifact_dir("dashboards") as folder:
            page = write_comparison(experiment, folder / name)
        log.info("comparison page logged to run %s as dashboards/%s%s", tracking.active_run_id(), name,
                 f" ({page.resolve()})" if page.exists() else "")
        if not out:
            return page
        page = write_comparison(experiment, out)
    log.info("comparison page: %s", page.resolve())
    return page


# --------------------------------------------------------------------------------- nscnet ui

def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as error:  # 401 from a server with logins: it answers
        return error.code < 500
    except Exception:
        return False


def _stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after `grace_s`."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def mlflow_command(cfg: UiConfig, uri: str, logins: access.Logins | None = None) -> list[str]:
    """`mlflow server` on the tracking store `uri`: host and origin checks set, the login app with `logins`."""
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", uri,
               "--host", cfg.host, "--port", str(cfg.mlflow_port), "--workers", "1", *access.security_args(cfg)]
    if logins is not None:
        command += ["--app-name", "basic-auth"]
    return command


def dashboard_command(cfg: UiConfig) -> list[str]:
    """`optuna-dashboard` on the study storage, on `access.dashboard_host(cfg)`."""
    storage = cfg.storage or DEFAULT_JOURNAL
    command = [str(Path(sys.executable).parent / "optuna-dashboard"), database_url(storage) if is_url(storage) else storage,
               "--host", access.dashboard_host(cfg), "--port", str(cfg.dashboard_port)]
    if not is_url(storage):
        command += ["--storage-class", "JournalFileStorage"]
    return command


def ui_commands(cfg: UiConfig, logins: access.Logins | None = None) -> dict[str, list[str]]:
    """The two server commands: mlflow (absent when the tracking URI is already a server) and optuna-dashboard."""
    uri = tracking.tracking_uri()
    commands = {} if uri.startswith("http") else {"mlflow": mlflow_command(cfg, uri, logins)}
    commands["optuna-dashboard"] = dashboard_command(cfg)
    return commands


def run_ui(cfg: UiConfig) -> dict[str, str]:
    """Start both dashboards, print their URLs, block until Ctrl-C / SIGTERM, stop both."""
    storage = cfg.storage or DEFAULT_JOURNAL
    if not is_url(storage):
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        Path(storage).touch()  # an empty journal is a valid (empty) storage for the dashboard
    uri = tracking.tracking_uri()
    if cfg.auth and uri.startswith("http"):
        raise ConfigError(f"auth=true: MLFLOW_TRACKING_URI={uri} is a server already; its logins are its own")
    logins = access.prepare_logins(cfg, uri) if cfg.auth else None
    urls = {"mlflow": uri if uri.startswith("http") else f"http://{access.url_host(cfg.host)}:{cfg.mlflow_port}",
            "optuna-dashboard": f"http://{access.url_host(access.dashboard_host(cfg))}:{cfg.dashboard_port}"}
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)  # no server gets a password it was not meant to have
    server_env = {"mlflow": {**env, **logins.server_env()} if logins else env, "optuna-dashboard": env}
    logs = Path(tempfile.mkdtemp(prefix="nscnet-ui-"))
    processes: dict[str, subprocess.Popen] = {}

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        for name, command in ui_commands(cfg, logins).items():
            log_file = open(logs / f"{name}.log", "wb")
            processes[name] = subprocess.Popen(command, env=server_env[name], stdout=log_file, stderr=subprocess.STDOUT,
                                               start_new_session=True)  # own group: stopped as a whole
        deadline = time.monotonic() + 120
        pending = set(processes)
        while pending:
            for name in list(pending):
                if processes[name].poll() is not None:
                    tail = (logs / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise ConfigError(f"{name} exited with code {processes[name].returncode}: "
                                      f"{mask_password(tail)}")
                if _answers(urls[name]):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise ConfigError(f"{', '.join(sorted(pending))} did not answer within 120 s (logs in {logs})")
            time.sleep(0.5)
        if logins is not None:
            access.ensure_viewer(f"http://{access.url_host(cfg.host)}:{cfg.mlflow_port}", logins)
        landing = tracking.ui_landing(cfg.experiment, urls["mlflow"])
        print(f"MLflow UI:        {landing}", flush=True)
        print(f"Optuna dashboard: {urls['optuna-dashboard']}  (storage {mask_password(storage)})", flush=True)
        print(access.reach_line(cfg, logins), flush=True)
        print("Press Ctrl-C to stop both.", flush=True)
        while all(p.poll() is None for p in processes.values()):
            time.sleep(0.5)
        gone = [name for name, p in processes.items() if p.poll() is not None]
        log.warning("%s stopped (logs in %s); stopping the other", ", ".join(gone), logs)
    except KeyboardInterrupt:
        print("stopping the dashboards", flush=True)
    finally:
        for process in processes.values():
            _stop(process)
        signal.signal(signal.SIGTERM, previous)
    return urls
