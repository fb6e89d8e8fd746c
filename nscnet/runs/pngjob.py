"""PNG copies of a run's figures, rendered after the run in a process of their own.

A PNG needs a headless Chromium (kaleido): about 4-6 s to start and 0.4-1.5 s a figure, more
than a whole BASENet run's arithmetic (docs/clustering.md, "Where the time goes"). So
`nscnet.runs.tracking.log_figure` logs the HTML at once and only queues the figure (its plotly JSON,
in a spool folder of the run); when the run ends, `nscnet.runs.tracking.start_run` starts this
module as a detached, lower-priority process that renders the queue with the same bounded
renderer (`nscnet.runs.tracking._write_png`) and logs each PNG to the finished run, under the same
artifact path as its HTML. The step is done without waiting for it.

The worker writes its warnings (no answer from the browser, ...) to the step's stderr, which it
inherits, and tags the run `nscnet.png` with "done: N" or "failed: <reason>". Its stdout is not
the step's: a pipe on a step's stdout (`nscnet basenet ... | tee`) ends with the step.

    python -m nscnet.runs.pngjob SPOOL      # render one spool (what start_run runs)
    python -m nscnet.runs.pngjob --wait     # wait for every running worker of this user
    python -m nscnet.runs.pngjob --serve ROOT   # one worker for many runs (the demo, below)

With NSCNET_PNG_SERVE set (the demo, `nscnet.demo`, sets it for its steps), the spools go to the
folder NSCNET_PNG_SPOOL and a run's end only marks its spool ready; one `--serve` worker renders
every ready spool there with one Chromium (started once, not once per run) until the folder holds
a `stop` file and no ready spool.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

MANIFEST = "jobs.jsonl"  # one line a figure: {"file", "folder", "name"}
PID_FILE = "worker.pid"
RUN_FILE = "run_id"
TAG = "nscnet.png"
WAIT_S = 300.0  # `--wait` gives up after this long
SERVE_ENV = "NSCNET_PNG_SERVE"  # set: a run's end marks its spool READY for a `--serve` worker
SPOOL_ENV = "NSCNET_PNG_SPOOL"  # the spool folder instead of the user's default
READY = "ready"
STOP = "stop"


def spool_root() -> Path:
    folder = os.environ.get(SPOOL_ENV, "").strip()
    return Path(folder) if folder else Path(tempfile.gettempdir()) / f"nscnet-png-{os.getuid()}"


def serving() -> bool:
    return bool(os.environ.get(SERVE_ENV, "").strip())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pending(root: Path | None = None) -> list[Path]:
    """Spools whose worker still runs (or has not written its pid yet)."""
    root = root or spool_root()
    out = []
    for spool in sorted(root.glob("*")) if root.is_dir() else []:
        pid_file = spool / PID_FILE
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            if time.time() - spool.stat().st_mtime < 60:  # just started
                out.append(spool)
            continue
        if _alive(pid):
            out.append(spool)
    return out


def wait_all(timeout: float = WAIT_S) -> int:
    """Wait until no worker of this user runs (at most `timeout` s); the number left."""
    deadline = time.monotonic() + timeout
    left = pending()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = pending()
    return len(left)


def render_spool(spool: Path) -> int:
    """Render every queued figure of `spool` and log it to its run; the number logged."""
    import plotly.io as pio
    from mlflow.tracking import MlflowClient

    from nscnet.runs import tracking

    run_id = (spool / RUN_FILE).read_text().strip()
    client = MlflowClient()
    done, reason = 0, ""
    try:
        jobs = [json.loads(line) for line in (spool / MANIFEST).read_text().splitlines() if line.strip()]
        for job in jobs:
            fig = pio.from_json((spool / job["file"]).read_text(), skip_invalid=True)
            image = spool / f"{job['name']}.png"
            if not tracking._write_png(fig, image):
                reason = tracking._png_off or "the PNG renderer failed"
                break
            client.log_artifact(run_id, str(image), artifact_path=job["folder"])
            image.unlink()
            done += 1
    except Exception as exc:  # never a traceback into the next step's terminal: one line
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        logging.getLogger(__name__).warning("PNG copies of run %s's figures stopped: %s", run_id, reason)
    try:
        client.set_tag(run_id, TAG, f"failed: {reason}" if reason else f"done: {done}")
    except Exception:
        pass
    return done


def serve(root: Path) -> int:
    """Render the spools of `root` as they become ready, one browser for all, until `root/stop`
    exists and no ready spool is left; the number of PNGs logged."""
    done = 0
    while True:
        ready = sorted(spool for spool in root.glob("*") if (spool / READY).exists())
        for spool in ready:
            try:
                done += render_spool(spool)
            finally:
                shutil.rmtree(spool, ignore_errors=True)
        if not ready:
            if (root / STOP).exists():
                return done
            time.sleep(0.2)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--wait"]:
        return 1 if wait_all() else 0
    with contextlib.suppress(OSError):
        os.nice(10)  # behind the next step: it only uses what that leaves
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for chatty in ("kaleido", "choreographer", "logistro"):
        logging.getLogger(chatty).setLevel(logging.CRITICAL)
    if argv[:1] == ["--serve"]:
        serve(Path(argv[1]))
        return 0
    spool = Path(argv[0])
    (spool / PID_FILE).write_text(str(os.getpid()))
    try:
        render_spool(spool)
    finally:  # the browser is closed at exit (nscnet.runs.tracking._write_png registered it)
        shutil.rmtree(spool, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
