"""One study worker: asks trials, picks their parameters without duplicates, runs and tells them.

Several workers (processes, machines) share one Optuna storage. Each worker loops:

1. fail stale trials (heartbeat older than 3 beats: a dead worker's trial);
2. stop when the study has `n_trials` complete trials; wait while running trials could still
   reach that number or could unlock the next K of the binary search;
3. `ask` a trial, then wait until every running trial with a smaller number has claimed its
   parameter set (user attribute `nscnet:key`); the trial takes the first grid point not
   claimed by those, nor by a queued trial. Trial numbers are a total order over all workers,
   so no grid point is run twice; a failed point is free again, so the next trial retries it;
4. once the grid is complete, the next K of the binary search is enqueued (a WAITING trial the
   dashboard shows) and popped by the next `ask`;
5. run the model's runner (nested MLflow run, tagged), `tell` the objective.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.samplers import PartialFixedSampler
from optuna.trial import FrozenTrial, TrialState

from nscnet.config import ConfigError, DataError, replace
from nscnet.runs import tracking
from nscnet.studies.space import Dimension, next_k, params_key

log = logging.getLogger(__name__)

KEY = "nscnet:key"          # user attr: the claimed parameter set ("" = this trial runs nothing)
PHASE = "nscnet:phase"      # "grid" or "refine"
MAX_FAILURES = 3            # a parameter set failing this often is given up
POLL_S = 0.2


@dataclass
class Plan:
    """What the workers of one study search, and how a trial is run."""

    dims: list[Dimension]
    grid: list[dict[str, Any]]
    objective: str
    maximize: bool
    n_trials: int
    refine_k: bool
    k_name: str | None
    run_trial: Callable[[dict[str, Any], FrozenTrial | Any], dict[str, float]]
    grid_keys: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.grid_keys = {params_key(p) for p in self.grid}


def _key_of(trial: FrozenTrial) -> str | None:
    if KEY in trial.user_attrs:
        return trial.user_attrs[KEY]
    fixed = trial.system_attrs.get("fixed_params")
    return params_key(fixed) if fixed else None


def _score(plan: Plan, value: float) -> float:
    return value if plan.maximize else -value


def choose(plan: Plan, trials: list[FrozenTrial], number: float) -> tuple[dict[str, Any], str] | None:
    """The parameter set for trial `number` (inf: "is there any work?"), or None.

    Taken: keys of queued trials, and of running/complete trials with a smaller number.
    """
    taken: set[str] = set()
    failures: Counter = Counter()
    for t in trials:
        key = _key_of(t)
        if not key:
            continue
        if t.state == TrialState.WAITING:
            taken.add(key)
        elif t.state == TrialState.FAIL:
            failures[key] += 1
        elif t.state in (TrialState.RUNNING, TrialState.COMPLETE) and t.number < number:
            taken.add(key)
    given_up = {key for key, count in failures.items() if count >= MAX_FAILURES}
    for point in plan.grid:
        key = params_key(point)
        if key not in taken and key not in given_up:
            return point, "grid"
    if not (plan.refine_k and plan.k_name):
        return None
    complete = [t for t in trials if t.state == TrialState.COMPLETE and _key_of(t)]
    done_keys = {_key_of(t) for t in complete} | given_up
    if not plan.grid_keys <= done_keys or not complete:
        return None  # the grid is still running: the binary search needs all of it
    best = max(complete, key=lambda t: _score(plan, t.value))
    setting = {k: v for k, v in best.params.items() if k != plan.k_name}
    scores = {t.params[plan.k_name]: t.value for t in complete
              if {k: v for k, v in t.params.items() if k != plan.k_name} == setting}
    k = next_k(scores, maximize=plan.maximize)
    if k is None:
        return None
    point = {**setting, plan.k_name: k}
    key = params_key(point)
    if key in taken or key in given_up:
        return None
    return point, "refine"


class _Heartbeat:
    """Records the trial's heartbeat every interval in a thread while the trial runs."""

    def __init__(self, storage: Any, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as exc:  # a missed beat must not kill the trial
                log.debug("heartbeat failed: %s", exc)
            if self.stop.wait(interval):
                return

    def __enter__(self) -> "_Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def _counts(trials: list[FrozenTrial]) -> tuple[int, int]:
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return complete, running


def _wait_for_claims(study: optuna.Study, number: int, limit_s: float = 60.0) -> list[FrozenTrial]:
    """All trials, once every running trial numbered below `number` has claimed (or given up)."""
    deadline = time.monotonic() + limit_s
    while True:
        trials = study.get_trials(deepcopy=False)
        pending = [t for t in trials if t.state == TrialState.RUNNING and t.number < number
                   and KEY not in t.user_attrs]
        if not pending or time.monotonic() > deadline:
            return trials
        time.sleep(0.02)


def _suggest(trial: optuna.Trial, dims: list[Dimension]) -> dict[str, Any]:
    params = {}
    for dim in dims:
        if dim.is_int_range:
            params[dim.name] = trial.suggest_int(dim.name, dim.low, dim.high, log=True)
        else:
            params[dim.name] = trial.suggest_categorical(dim.name, list(dim.grid))
    return params


def _give_back(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """A trial that runs nothing (lost a race for the last slot or the last point): pruned."""
    trial.set_user_attr(KEY, "")
    trial.set_user_attr("nscnet:skipped", reason)
    study.tell(trial, state=TrialState.PRUNED)


def work(study: optuna.Study, plan: Plan, storage: Any, *, timeout_s: float = 0.0,
         sampler_seed: int = 0, progress: Any = None) -> int:
    """Run trials of `study` until it holds `plan.n_trials` complete trials; returns how many ran here."""
    base_sampler = optuna.samplers.RandomSampler(seed=sampler_seed)
    started, ran = time.monotonic(), 0
    while True:
        if timeout_s and time.monotonic() - started > timeout_s:
            log.info("timeout of %.0f s reached", timeout_s)
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        complete, running = _counts(trials)
        if progress is not None:
            progress.n = min(complete, plan.n_trials)
            progress.refresh()
        if complete >= plan.n_trials:
            break
        queued = any(t.state == TrialState.WAITING for t in trials)
        choice = None if queued else choose(plan, trials, float("inf"))
        if complete + running >= plan.n_trials or (not queued and choice is None):
            if running == 0:  # nothing left to run: grid and binary search are done
                if complete < plan.n_trials:
                    log.warning("the grid and the search around the best K are done after %d complete trials: "
                                "n_trials=%d is an upper bound, no parameter set is left to try", complete,
                                plan.n_trials)
                break
            time.sleep(POLL_S)
            continue
        if choice is not None and choice[1] == "refine":
            study.enqueue_trial(choice[0], user_attrs={PHASE: "refine"}, skip_if_exists=True)
        ran += _run_one(study, plan, storage, base_sampler)
    return ran


def _run_one(study: optuna.Study, plan: Plan, storage: Any, base_sampler: Any) -> int:
    wall_start = time.perf_counter()  # ask -> tell: what the trial costs this worker
    with warnings.catch_warnings():  # our loop runs the heartbeat thread Study.optimize would
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        trial = study.ask()
    trials = _wait_for_claims(study, trial.number)
    frozen = next(t for t in trials if t.number == trial.number)
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    ahead = sum(t.state == TrialState.RUNNING and t.number < trial.number and bool(t.user_attrs.get(KEY))
                for t in trials)
    if complete + ahead >= plan.n_trials:
        _give_back(study, trial, "the study's trial budget was already taken")
        return 0
    fixed = frozen.system_attrs.get("fixed_params")
    if fixed:
        key = params_key(fixed)
        if any(_key_of(t) == key and t.number < trial.number and t.state in (TrialState.RUNNING, TrialState.COMPLETE)
               for t in trials):
            _give_back(study, trial, "duplicate of a queued parameter set")
            return 0
        params, phase = dict(fixed), frozen.user_attrs.get(PHASE, "queued")
    else:
        choice = choose(plan, trials, trial.number)
        if choice is None:
            _give_back(study, trial, "no parameter set left")
            return 0
        params, phase = choice
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.sampler = PartialFixedSampler(params, base_sampler)
    key = params_key(params)
    trial.set_user_attr(KEY, key)  # the claim: later trials wait for it and skip this key
    trial.set_user_attr(PHASE, phase)
    failed_before = [t.number for t in trials if t.state == TrialState.FAIL and _key_of(t) == key]
    if failed_before:
        trial.set_user_attr("nscnet:retry_of", failed_before[-1])
    params = _suggest(trial, plan.dims)
    with _Heartbeat(storage, trial._trial_id):
        try:
            metrics = plan.run_trial(params, trial)
        except BaseException as exc:
            trial.set_user_attr("nscnet:error", f"{type(exc).__name__}: {str(exc)[:500]}")
            study.tell(trial, state=TrialState.FAIL)
            if isinstance(exc, (ConfigError, DataError, KeyboardInterrupt)):
                raise
            log.warning("trial %d failed: %s", trial.number, exc)
            return 1
    if plan.objective not in metrics:
        study.tell(trial, state=TrialState.FAIL)
        raise ConfigError(f"objective={plan.objective!r} is not among the logged metrics: {', '.join(sorted(metrics))}")
    for name, value in metrics.items():
        if isinstance(value, (int, float)):
            trial.set_user_attr(name, float(value))
    trial.set_user_attr("nscnet:wall_s", time.perf_counter() - wall_start)
    study.tell(trial, float(metrics[plan.objective]))
    return 1


def _dashboard_note(trial: Any, markdown: str) -> None:
    """The trial's note in optuna-dashboard (Markdown: the link is clickable there), when installed."""
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return
    try:
        save_note(trial, markdown)
    except Exception as exc:  # a note must not fail the trial
        log.debug("dashboard note not saved: %s", exc)


def mlflow_trial_runner(runner: Callable[..., dict], base_cfg: Any, *, study_name: str,
                        features: Callable[[Any], Any] | None) -> Callable[[dict[str, Any], Any], dict[str, float]]:
    """A `run_trial` that calls the model's runner (which opens the nested MLflow run) and tags it."""

    def run_trial(params: dict[str, Any], trial: Any) -> dict[str, float]:
        from nscnet.runs.runinfo import trial_name

        cfg = replace(base_cfg, **params)
        if not base_cfg.run_name:
            cfg = replace(cfg, run_name=trial_name(study_name, trial.number, params))
        kwargs = {"features": features(cfg)} if features is not None else {}
        previous_run = tracking.last_run_id()
        model_start = time.perf_counter()
        failed: BaseException | None = None
        try:
            metrics = runner(cfg, **kwargs) or {}
        except BaseException as exc:
            failed, metrics = exc, {}
        trial.set_user_attr("nscnet:model_s", time.perf_counter() - model_start)
        run_id = tracking.last_run_id()
        if run_id and run_id != previous_run:
            trial.set_user_attr("mlflow_run_id", run_id)
            url = tracking.run_link(tracking.get_run(run_id).info.experiment_id, run_id)
            trial.set_user_attr("mlflow_run_url", url)
            _dashboard_note(trial, f"MLflow run [{cfg.run_name or run_id}]({url}) (`{run_id}`)")
            tracking.tag_run(run_id, {"optuna.study_name": study_name, "optuna.trial_number": trial.number,
                                      "nscnet.study_phase": trial.user_attrs.get(PHASE, "")})
        if failed is not None:
            raise failed
        return metrics

    return run_trial
