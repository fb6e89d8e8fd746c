"""The demo (`make demo`, `scripts/demo.sh`): the whole pipeline on synthetic songs, in one go.

    python -m nscnet.demo [--jobs N]

The same steps as the `nscnet ...` commands it prints: synthetic songs -> dataset -> the three
models -> analyses -> a short study -> the comparison page -> the report of the NSCNet run, all
logged to the MLflow store of the working directory (./mlflow.db), the study to
./optuna.journal, files to ./demo. Each step runs through `nscnet.cli.run`, the code path of
the `nscnet` command, but in a few long-lived worker processes instead of a fresh process per
step, so the imports (torch, mlflow, scikit-learn, librosa: 5-10 s a process) and the MLflow store's
set-up are paid once per worker, not once per step; and steps that do not need each other's
output (entropy beside preprocess; the models, the study and the analyses once the dataset is
there) run at the same time, one per core.

`--jobs`: how many steps run at once, by default the CPU budget: OMP_NUM_THREADS when set, else
the cores this process may use, at most 4 (`cpu_budget`); every worker gets budget / jobs BLAS and
torch threads. Each step's output goes to `demo/logs/<step>.log` and is printed whole when the
step ends, under its command line, its seconds and its run id; the demo ends with the table of
what ran when, and how to open the dashboards.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from nscnet.runs import pngjob

OUT = "demo"
COMPARE = "comparison page"
MODEL_STEPS = ("basenet", "zipf", "entropy", "nscnet", "predict", "pretrain", "vaenet", "study")


@dataclass(frozen=True)
class Task:
    name: str                  # a step name (`nscnet <name> ...`) or COMPARE
    words: str                 # the command's words after `nscnet`; {basenet}, {nscnet}: those steps' run ids
    after: tuple[str, ...] = ()
    cost_s: float = 1.0        # rough seconds on one thread (measured, demo of 2 Dec 2026): longest chains first
    experiment: bool = True    # the command takes --experiment (report logs to its run's experiment)

    def command(self, run_ids: dict[str, str], experiment: str) -> list[str]:
        words = shlex.split(self.words.format(**run_ids))
        return [*words, "--experiment", experiment] if self.experiment else words

    def shown(self, run_ids: dict[str, str], experiment: str) -> str:
        if self.name == COMPARE:
            return f"python dashboards/compare.py --experiment {experiment} --out {OUT}/comparison.html"
        return "nscnet " + shlex.join(self.command(run_ids, experiment))


TASKS: tuple[Task, ...] = (
    Task("synth", f"synth --out {OUT}/audio --types 8 --songs 480 --zipf_s 1.0 --seed 0", cost_s=4),
    Task("preprocess", f"preprocess --audio {OUT}/audio --out {OUT}/dataset --duration_s 3 --frames 128 --n_mels 64",
         ("synth",), cost_s=5),
    Task("entropy", f"entropy --audio {OUT}/audio", ("synth",), cost_s=4),
    Task("basenet", f"basenet --data {OUT}/dataset --k 8 --pca_dim 64 --whiten false --l2 false --truth true",
         ("preprocess",), cost_s=1.5),
    Task("zipf", "zipf --run_id {basenet} --bootstrap 500", ("basenet",), cost_s=1.5),
    Task("nscnet", f"nscnet --data {OUT}/dataset --k 8 --epochs 3 --backbone small_cnn --truth true --num_workers 0",
         ("preprocess",), cost_s=25),
    Task("predict", "predict --run_id {nscnet} " + f"--data {OUT}/dataset --out {OUT}/predictions", ("nscnet",),
         cost_s=5),
    Task("pretrain", f"pretrain --data {OUT}/dataset --k 8 --epochs 2 --truth true --num_workers 0", ("preprocess",),
         cost_s=20),
    Task("vaenet", f"vaenet --data {OUT}/dataset --k 8 --epochs 3 --truth true --num_workers 0", ("preprocess",),
         cost_s=19),
    Task("study", f"study --model basenet --data {OUT}/dataset --n_trials 12 --k_min 2 --k_max 32 --params k "
                  "--truth true --overrides whiten=false,l2=false,pca_dim=32 --study_name demo-basenet",
         ("preprocess",), cost_s=13),
    Task(COMPARE, "", MODEL_STEPS, cost_s=1, experiment=False),
    Task("report", "report --run_id {nscnet} " + f"--out {OUT}/report", ("nscnet",), cost_s=8,
         experiment=False),
)

# what a worker imports while the first step runs, so that its first model step does not wait for
# it: the step modules' libraries (torch + torchvision, mlflow, scikit-learn + plotly, librosa)
WARM_MODULES = ("nscnet.models.nscnet", "nscnet.runs.tracking", "nscnet.clustering.evaluate", "librosa.core")


def cpu_budget() -> int:
    """The CPU threads the demo may use: OMP_NUM_THREADS when set (a slot of a shared
    machine), else the cores this process may run on; at most 4 (no more branches to run)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return min(int(value), 4)
    return max(1, min(len(os.sched_getaffinity(0)), 4))


def chain_s(tasks: tuple[Task, ...] = TASKS) -> dict[str, float]:
    """Each task's cost plus the longest chain of tasks that wait for it (list scheduling order)."""
    out: dict[str, float] = {}

    def longest(name: str) -> float:
        if name not in out:
            task = next(t for t in tasks if t.name == name)
            out[name] = task.cost_s + max((longest(t.name) for t in tasks if name in t.after), default=0.0)
        return out[name]

    for task in tasks:
        longest(task.name)
    return out


# ---- in a worker process ----

def _init_worker(threads: int, env: dict[str, str]) -> None:
    # the demo's environment as it is now (tracking URI, experiment, PNG spool of
    # `_start_png_server`): the forkserver is started once per process and keeps the environment
    # of that moment, which a later demo in the same process (a test) must not inherit
    os.environ.clear()
    os.environ.update(env)
    # before numpy / torch load in this process: their thread pools read these once
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ.setdefault("NSCNET_PROGRESS", "0")  # the log goes to a file, printed when the step ends


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Everything this process writes to stdout and stderr (also from C code and child
    processes started meanwhile) goes to `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, "w") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def _cpu_s() -> float:
    """CPU seconds of this process and of its children that have ended (user + system)."""
    import resource

    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def _warm_up(modules: tuple[str, ...]) -> dict[str, Any]:
    import importlib

    started, cpu = time.time(), _cpu_s()
    for module in modules:
        importlib.import_module(module)
    return {"code": 0, "started": started, "ended": time.time(), "cpu_s": _cpu_s() - cpu, "pid": os.getpid(),
            "run_id": None}


def _run_task(name: str, words: list[str], experiment: str, log_path: str) -> dict[str, Any]:
    """Run one task in this worker, its output to `log_path`: exit status, times, run id."""
    started, cpu = time.time(), _cpu_s()
    run_id = None
    with _output_to(Path(log_path)):
        try:
            if name == COMPARE:
                from nscnet.ui.dashboards import write_comparison

                out = write_comparison(experiment, Path(OUT) / "comparison.html")
                print(f"comparison page: {out.resolve()}")
                code = 0
            else:
                from nscnet import cli

                code, result = cli.run(words)
                if isinstance(result, dict):
                    run_id = result.get("run_id")
        except BaseException as exc:  # reported by the parent with the log; the worker lives on
            import traceback

            traceback.print_exc()
            code = 130 if isinstance(exc, KeyboardInterrupt) else 1
    return {"code": code, "started": started, "ended": time.time(), "cpu_s": _cpu_s() - cpu, "pid": os.getpid(),
            "run_id": run_id}


# ---- in the demo's own process ----

def run_demo(jobs: int, experiment: str, *, tasks: tuple[Task, ...] = TASKS,
             warm_modules: tuple[str, ...] = WARM_MODULES) -> int:
    """Run `tasks` on `jobs` workers, longest chain first (the other workers import
    `warm_modules` while the first task runs); print each task's output as it ends, then the
    table of what ran. The exit status: 0, or the first failed step's."""
    demo_started = time.time()
    logs = Path(OUT) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    threads = max(1, cpu_budget() // jobs)
    done: dict[str, Any] = {}
    run_ids: dict[str, str] = {}
    # forkserver: the workers start from a fresh, light process even when this one has loaded
    # torch or scikit-learn (OpenMP thread pools do not survive a fork); each then imports what
    # its steps need, once
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["nscnet.cli"])
    print(f"nscnet demo: {len(tasks)} steps, {jobs} at a time, {threads} thread(s) each; each step's "
          f"output is printed when it ends (logs in {logs}/)", flush=True)
    png_root, png_worker, png_env = _start_png_server()
    try:
        failed = _schedule(tasks, jobs, (threads, {**os.environ, **png_env}), experiment, context, warm_modules,
                           logs, demo_started,
                           done, run_ids)
    finally:
        (png_root / pngjob.STOP).touch()  # the PNG worker ends once it has drawn every ready spool
    if failed:
        return failed
    print("\n== PNG copies of the figures (one worker, one Chromium, for every run)", flush=True)
    png_started = time.time()
    try:
        png_worker.wait(pngjob.WAIT_S)
    except subprocess.TimeoutExpired:
        print(f"the PNG worker is still drawing after {pngjob.WAIT_S:g} s; its PNGs come later")
    else:
        shutil.rmtree(png_root, ignore_errors=True)
    png_s = time.time() - png_started
    _print_table(tasks, done, run_ids, demo_started, png_s, jobs)
    _print_closing(experiment, run_ids.get("nscnet", ""))
    return 0


def _start_png_server() -> tuple[Path, subprocess.Popen, dict[str, str]]:
    """One `pngjob --serve` worker for all the demo's runs (`nscnet.runs.pngjob`): Chromium
    starts once, not once per run; the steps, given the returned environment, only mark their
    spools ready."""
    root = Path(tempfile.mkdtemp(prefix="nscnet-demo-png-"))
    env = {pngjob.SPOOL_ENV: str(root), pngjob.SERVE_ENV: "1"}
    worker = subprocess.Popen([sys.executable, "-m", "nscnet.runs.pngjob", "--serve", str(root)],
                              env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              start_new_session=True)
    return root, worker, env


def _schedule(tasks, jobs, init_args, experiment, context, warm_modules, logs, demo_started, done, run_ids) -> int:
    """Run the tasks on the worker pool (see run_demo); the first failed step's exit status or 0."""
    priority = chain_s(tasks)
    waiting = list(tasks)
    running: dict[cf.Future, Task | None] = {}
    failed = 0
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                                initargs=init_args) as pool:
        warm = True
        while waiting or running:
            ready = sorted((t for t in waiting if all(d in done for d in t.after)), key=lambda t: -priority[t.name])
            while ready and len(running) < jobs and not failed:
                task = ready.pop(0)
                waiting.remove(task)
                words = task.command(run_ids, experiment) if task.name != COMPARE else []
                log_path = logs / f"{task.name.replace(' ', '-')}.log"
                running[pool.submit(_run_task, task.name, words, experiment, str(log_path))] = task
            if warm and warm_modules and len(running) < jobs and waiting and not failed:  # the first runs alone
                for _ in range(jobs - len(running)):
                    running[pool.submit(_warm_up, warm_modules)] = None
            warm = False
            if failed and not running:
                break
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                task = running.pop(future)
                outcome = future.result()
                if task is None:
                    done.setdefault("_imports", []).append(outcome)  # type: ignore[arg-type]
                    continue
                done[task.name] = outcome
                if outcome["run_id"]:
                    run_ids[task.name] = outcome["run_id"]
                _print_task(task, outcome, run_ids, experiment, logs, demo_started)
                if outcome["code"] != 0 and not failed:
                    failed = outcome["code"]
                    print(f"\nnscnet demo: {task.name} failed (exit status {failed}); the steps under way "
                          f"finish, no new one starts", file=sys.stderr, flush=True)
    return failed


def _print_task(task: Task, outcome: dict[str, Any], run_ids: dict[str, str], experiment: str, logs: Path,
                demo_started: float) -> None:
    seconds = outcome["ended"] - outcome["started"]
    print(f"\n== {task.shown(run_ids, experiment)}")
    text = (logs / f"{task.name.replace(' ', '-')}.log").read_text(errors="replace").rstrip()
    if text:
        print(text)
    run = f", run {outcome['run_id']}" if outcome["run_id"] else ""
    print(f"   [{task.name}: {seconds:.1f} s ({outcome['cpu_s']:.1f} s CPU), from {outcome['started'] - demo_started:.1f} s to "
          f"{outcome['ended'] - demo_started:.1f} s of the demo{run}]", flush=True)


def _print_table(tasks: tuple[Task, ...], done: dict[str, Any], run_ids: dict[str, str], demo_started: float,
                 png_s: float, jobs: int) -> None:
    total = time.time() - demo_started
    rows = [("imports (a 2nd worker)", o) for o in done.get("_imports", [])]
    rows += [(f"nscnet {t.name}" if t.name != COMPARE else COMPARE, done[t.name]) for t in tasks]
    rows.sort(key=lambda row: row[1]["started"])
    step_s = sum(o["ended"] - o["started"] for _, o in rows)
    cpu_s = sum(o["cpu_s"] for _, o in rows)
    print(f"\n== what the demo did, seconds per step ({total:.0f} s in all; {jobs} at a time: {step_s:.0f} s of "
          f"steps, {cpu_s:.0f} s of CPU in the workers)")
    print(f"{'seconds':>8}  {'CPU s':>6}  {'from':>6}  {'to':>6}  {'step':<24}run")
    for label, o in rows:
        print(f"{o['ended'] - o['started']:8.1f}  {o['cpu_s']:6.1f}  {o['started'] - demo_started:6.1f}  "
              f"{o['ended'] - demo_started:6.1f}  {label:<24}{o['run_id'] or ''}")
    print(f"{png_s:8.1f}  {'':>6}  {'':>6}  {total:6.1f}  PNG copies (waited for)")


def _print_closing(experiment: str, nscnet_run: str) -> None:
    here = Path.cwd()
    print(f"""
Demo done. Runs are in the MLflow store {here}/mlflow.db (experiment "{experiment}"),
the study in {here}/optuna.journal, the comparison page of all runs in {here}/{OUT}/comparison.html.
Open both dashboards with:

    .venv/bin/nscnet ui --experiment {experiment}
    # MLflow UI:        http://127.0.0.1:5000/#/experiments/<id>/runs?workflowType=machine_learning&compareRunsMode=CHART
    # Optuna dashboard: http://127.0.0.1:8080

or the MLflow UI alone: .venv/bin/mlflow ui --backend-store-uri sqlite:///{here}/mlflow.db

The report of the NSCNet run (look at and listen to every cluster; offline, one file):

    {here}/{OUT}/report/report.html   (also artifact report/report.html of run {nscnet_run})""")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nscnet.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=0,
                        help="steps at a time (default 0: the CPU budget, OMP_NUM_THREADS or the cores, at most 4)")
    parser.add_argument("--experiment", default=os.environ.get("NSCNET_EXPERIMENT", "nscnet-demo"),
                        help="MLflow experiment of every run (default: $NSCNET_EXPERIMENT or nscnet-demo)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return run_demo(args.jobs if args.jobs > 0 else cpu_budget(), args.experiment)


if __name__ == "__main__":
    from nscnet import demo  # the workers find their functions as nscnet.demo.*, not __main__.*

    sys.exit(demo.main())
