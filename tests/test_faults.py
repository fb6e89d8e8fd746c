"""Fault injection: every step is SIGKILLed at a seeded random moment, then run again.

For each step (`preprocess`, `basenet`, `vaenet`, `nscnet`, `pretrain`, a `study` worker,
`zipf`) one uninterrupted reference runs in this process; then, per kill point, the step runs
as a real `python -m nscnet` process, is SIGKILLed at `u x (the reference's duration)` after
its MLflow run appeared (u in [0, 1.5) from a seeded RNG: the same seed, the same moments), and is
run again here: `--resume <run id>` for the steps that resume (vaenet, nscnet, pretrain), a fresh
run for the others, the same study for the study worker. The second run's outputs must equal the
reference's: dataset bytes, assignments, embeddings or weights, the metrics that do not measure
time, the study's trials. And the store must hold no run left RUNNING by the killed process:
starting again marks it KILLED (or, resumed, it ends FINISHED).

The random moment may fall before a deep model's first checkpoint; so each of vaenet, nscnet and
pretrain is also killed at a fixed moment, right after a checkpoint mid-training, and resumed
from it (`test_deep_step_killed_after_a_checkpoint_...`).

Default: one kill point per step, tiny data (CI-sized). `NSCNET_FAULT_POINTS=50` runs 50 per
step, `NSCNET_FAULT_SEED` draws other moments. Every kill point prints one line (`-s` shows
them): the step, the moment, whether the kill landed before the process ended, what the run
held when it was killed, and what the second run did.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from nscnet.runs import tracking as T
from nscnet.config import (BasenetConfig, DataError, NscnetConfig, PreprocessConfig, PretrainConfig, StudyConfig,
                           SynthConfig, VaenetConfig, ZipfConfig, to_params)
from nscnet.images.dataset import IMAGES, META, SEGMENTS
from tests.fixtures_resume import kill_after_epochs, launch, training_store

POINTS = int(os.environ.get("NSCNET_FAULT_POINTS", "1"))
SEED = int(os.environ.get("NSCNET_FAULT_SEED", "0"))
RESULTS: list[str] = []

# metrics that measure time, speed or the machine, not the result
UNSTABLE = re.compile(r"seconds|per_second|time|memory|rss|^system/|^cached$")


def cli_args(cfg: Any, defaults: Any) -> list[str]:
    """The command line of a config: every field that differs from the defaults."""
    base, args = to_params(defaults), []
    for name, value in to_params(cfg).items():
        if value != base[name]:
            args.append(f"--{name}={str(value).lower() if isinstance(value, bool) else value}")
    return args


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with training_store(tmp_path_factory.mktemp("faults")) as root:
        yield root


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print("\nfault injection (step, point, kill moment, outcome):")
    for line in RESULTS:
        print("  " + line)


def stable_metrics(run_id: str) -> dict[str, float]:
    return {k: v for k, v in T.get_run(run_id).data.metrics.items() if not UNSTABLE.search(k)}


def assert_same_metrics(run_id: str, reference: str) -> None:
    got, want = stable_metrics(run_id), stable_metrics(reference)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key


def artifact_bytes(run_id: str, path: str) -> bytes:
    return T.download_artifact(run_id, path).read_bytes()


def runs_of_pid(pid: int) -> list[Any]:
    runs = MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()],
                                      filter_string=f"tags.`nscnet.pid` = '{pid}'")
    return sorted(runs, key=lambda r: r.info.start_time)


def assert_nothing_left_running() -> None:
    """No run of the store is RUNNING (this process ran every other one to its end)."""
    client = MlflowClient()
    running = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                 filter_string="attributes.status = 'RUNNING'")
    assert not running, [(r.info.run_id, r.data.tags.get("nscnet.step"), r.data.tags.get("nscnet.pid")) for r in running]


def kill_at_random_moment(step: str, store: Path, args: list[str], *, work_s: float, point: int,
                          state: Callable[[Any], str] = lambda run: "") -> dict[str, Any]:
    """Launch `nscnet <step> <args>`, SIGKILL it u x work_s after its MLflow run appeared, u in
    [0, 1.5): a process is slower than the warm in-process reference, and the last third also
    reaches past the end of the step (a kill while the process winds down)."""
    u = 1.5 * random.Random(f"{SEED}:{step}:{point}").random()
    process = launch(step, store, *args)
    run, deadline = None, time.monotonic() + 180
    while process.poll() is None and time.monotonic() < deadline:
        found = runs_of_pid(process.pid)
        if found:
            run = found[0]
            break
        time.sleep(0.05)
    time.sleep(u * work_s)
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
    output = process.communicate(timeout=60)[0]
    assert process.returncode == (-signal.SIGKILL if killed else 0), output
    runs = runs_of_pid(process.pid)
    # the step's own run: the first one it opened (zipf's is nested under the clustering run it reads)
    top = next((r for r in runs if "mlflow.parentRunId" not in r.data.tags), runs[0] if runs else None)
    if top is not None:
        top = T.get_run(top.info.run_id)
    held = state(top) if (killed and top is not None) else ""
    return {"u": u, "moment": f"{u * work_s:.2f}s after its run began", "killed": killed, "pid": process.pid,
            "run": top, "runs": runs, "held": held, "output": output}


def record(step: str, point: int, kill: dict[str, Any], again: str) -> None:
    landed = "killed" if kill["killed"] else "ended before the kill"
    status = kill["run"].info.status if kill["run"] is not None else "no run yet"
    held = f", {kill['held']}" if kill["held"] else ""
    RESULTS.append(f"{step} #{point}: u={kill['u']:.3f} ({kill['moment']}): {landed} (run {status}{held}); {again}")


def assert_killed_runs_closed(kill: dict[str, Any], resumed: str | None = None) -> None:
    """The killed process's runs: KILLED by the sweep, or FINISHED when resumed; none RUNNING."""
    for run in kill["runs"]:
        status = T.get_run(run.info.run_id).info.status
        if run.info.run_id == resumed:
            assert status == "FINISHED"
        elif kill["killed"]:
            assert status in ("KILLED", "FINISHED"), (run.info.run_id, status)
            if status == "KILLED":
                tags = T.get_run(run.info.run_id).data.tags
                assert f"process {kill['pid']} on" in tags.get("nscnet.ended_by", ""), tags
        else:
            assert status == "FINISHED"
    assert_nothing_left_running()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


# ------------------------------------------------------------------------------ preprocess

PRE = dict(n_mels=32, frames=64, duration_s=1.0)


@pytest.fixture(scope="module")
def audio(store):
    from nscnet.audio.synth import write_synthetic

    write_synthetic(SynthConfig(out=str(store / "audio"), songs=40, recordings=2, types=4, seed=0))
    return store / "audio"


@pytest.fixture(scope="module")
def preprocessed(store, audio):
    from nscnet.images.preprocess import preprocess

    cfg = PreprocessConfig(audio=str(audio), out=str(store / "dataset-ref"), **PRE)
    return timed(lambda: preprocess(cfg))[1]


@pytest.mark.parametrize("point", range(POINTS))
def test_preprocess_killed_anywhere_then_run_again_writes_the_same_dataset(store, audio, preprocessed, point):
    from nscnet.images.preprocess import run_preprocess

    out = store / f"dataset-{point}"
    cfg = PreprocessConfig(audio=str(audio), out=str(out), **PRE)

    def state(run):
        return "partial files: " + (",".join(sorted(p.name for p in out.glob("*.partial"))) or "none") \
            + f", complete: {(out / META).is_file()}"

    kill = kill_at_random_moment("preprocess", store, cli_args(cfg, PreprocessConfig()), work_s=preprocessed,
                                 point=point, state=state)
    result = run_preprocess(cfg)
    reference = store / "dataset-ref"
    for name in (IMAGES, SEGMENTS):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    import json

    assert json.loads((out / META).read_text())["content_hash"] == json.loads((reference / META).read_text())["content_hash"]
    assert not list(out.glob("*.partial"))
    assert_killed_runs_closed(kill)
    record("preprocess", point, kill, "rerun " + ("reused the finished dataset" if result["cached"] else "rebuilt it"))


# ------------------------------------------------------------------------------ basenet, zipf

@pytest.fixture(scope="module")
def blobs(store):
    from tests.fixtures_cluster import make_blob_dataset

    return make_blob_dataset(store / "blobs", classes=4, per_class=30, seed=1)


def basenet_cfg(blobs: Path) -> BasenetConfig:
    return BasenetConfig(data=str(blobs), k=4, pca_dim=8, n_init=2, stability_runs=1, truth=True, figures=True)


@pytest.fixture(scope="module")
def basenet_ref(store, blobs):
    from nscnet.models.basenet import run_basenet

    return timed(lambda: run_basenet(basenet_cfg(blobs)))


@pytest.mark.parametrize("point", range(POINTS))
def test_basenet_killed_anywhere_then_run_again_gives_the_same_clustering(store, blobs, basenet_ref, point):
    from nscnet.models.basenet import run_basenet

    reference, seconds = basenet_ref
    cfg = basenet_cfg(blobs)
    kill = kill_at_random_moment("basenet", store, cli_args(cfg, BasenetConfig()), work_s=seconds, point=point)
    again = run_basenet(cfg)
    assert artifact_bytes(again["run_id"], "assignments.csv") == artifact_bytes(reference["run_id"], "assignments.csv")
    assert_same_metrics(again["run_id"], reference["run_id"])
    assert_killed_runs_closed(kill)
    record("basenet", point, kill, "fresh rerun: same assignments and metrics")


def zipf_cfg(run_id: str) -> ZipfConfig:
    return ZipfConfig(run_id=run_id, bootstrap=100, orders=20)


@pytest.fixture(scope="module")
def zipf_ref(store, basenet_ref):
    from nscnet.analysis.zipf import run_zipf

    return timed(lambda: run_zipf(zipf_cfg(basenet_ref[0]["run_id"])))


@pytest.mark.parametrize("point", range(POINTS))
def test_zipf_killed_anywhere_then_run_again_gives_the_same_fit(store, basenet_ref, zipf_ref, point):
    from nscnet.analysis.zipf import run_zipf

    reference, seconds = zipf_ref
    cfg = zipf_cfg(basenet_ref[0]["run_id"])
    kill = kill_at_random_moment("zipf", store, cli_args(cfg, ZipfConfig()), work_s=seconds, point=point)
    again = run_zipf(cfg)
    assert artifact_bytes(again["run_id"], "zipf_ranks.csv") == artifact_bytes(reference["run_id"], "zipf_ranks.csv")
    assert_same_metrics(again["run_id"], reference["run_id"])
    assert_killed_runs_closed(kill)
    record("zipf", point, kill, "fresh rerun: same ranks and metrics")


# ------------------------------------------------------------------------------ deep models

@pytest.fixture(scope="module")
def images(store):
    from tests.fixtures_deep import make_dataset

    return make_dataset(store / "images", classes=3, per_class=12, height=32, width=64, seed=1)


DEEP = dict(num_workers=0, device="cpu", threads=1, seed=2, truth=True)
NSC = dict(k=3, epochs=4, epoch_length=1, backbone="small_cnn", embedding_dim=32, pca_dim=8, lr=1e-3, batch_size=12,
           freq_mask=4, stability_runs=0, **DEEP)
VAE = dict(epochs=4, batch_size=12, lr=1e-2, k=3, pca_dim=4, n_reconstructions=2, filters=(4, 8, 8, 16, 16),
           dense_units=32, latent_dim=4, stability_runs=0, **DEEP)
PRE_TRAIN = dict(k=3, epochs=3, batch_size=12, embedding_dim=16, pca_dim=4, projection_dim=8, stability_runs=0, **DEEP)


def checkpoint_state(run) -> str:
    names = T.list_artifacts(run.info.run_id, "checkpoint")
    if "checkpoint/checkpoint.pt" not in names:
        return "no checkpoint"
    import torch

    state = torch.load(T.download_artifact(run.info.run_id, "checkpoint/checkpoint.pt"), weights_only=True)
    return f"checkpoint after epoch {state['epoch']}"


def resume_or_start(runner: Callable[[Any], dict], cfg_class: type, cfg: Any, kill: dict[str, Any]) -> tuple[dict, str]:
    """`--resume <killed run>` when the killed process got as far as logging its config, else a fresh run."""
    run = kill["run"]
    if run is None or not kill["killed"]:
        return runner(cfg), "fresh rerun (nothing to resume)"
    if run.info.status == "FINISHED":  # killed while the process wound down: the run is complete
        return {"run_id": run.info.run_id}, "nothing to resume (the run had finished): its outputs"
    if "config.json" not in T.list_artifacts(run.info.run_id):
        with pytest.raises(DataError, match="stopped before it logged its config.json"):
            runner(cfg_class(resume=run.info.run_id, device="cpu", num_workers=0, threads=1))
        return runner(cfg), "resume refused (killed before config.json): fresh rerun"
    return runner(cfg_class(resume=run.info.run_id, device="cpu", num_workers=0, threads=1)), "resumed"


def _deep_case(step, runner, cfg_class, cfg, reference, seconds, store, point, compare):
    kill = kill_at_random_moment(step, store, cli_args(cfg, cfg_class()), work_s=seconds, point=point,
                                 state=checkpoint_state)
    again, how = resume_or_start(runner, cfg_class, cfg, kill)
    compare(again["run_id"], reference["run_id"])
    assert_same_metrics(again["run_id"], reference["run_id"])
    resumed = again["run_id"] if how == "resumed" or how.startswith("nothing to resume") else None
    if resumed:
        assert resumed == kill["run"].info.run_id
    assert_killed_runs_closed(kill, resumed=resumed)
    record(step, point, kill, how + ": same outputs and metrics")


def same_clustering(run_id: str, reference: str) -> None:
    assert artifact_bytes(run_id, "assignments.csv") == artifact_bytes(reference, "assignments.csv")
    np.testing.assert_array_equal(np.load(T.download_artifact(run_id, "embeddings.npy")),
                                  np.load(T.download_artifact(reference, "embeddings.npy")))


@pytest.fixture(scope="module")
def nscnet_ref(store, images):
    from nscnet.models.nscnet import run_nscnet

    return timed(lambda: run_nscnet(NscnetConfig(data=str(images), **NSC)))


@pytest.mark.parametrize("point", range(POINTS))
def test_nscnet_killed_anywhere_then_resumed_ends_like_an_uninterrupted_run(store, images, nscnet_ref, point):
    from nscnet.models.nscnet import run_nscnet

    _deep_case("nscnet", run_nscnet, NscnetConfig, NscnetConfig(data=str(images), **NSC), *nscnet_ref, store, point,
               same_clustering)


@pytest.fixture(scope="module")
def vaenet_ref(store, images):
    from nscnet.models.vaenet import run_vaenet

    return timed(lambda: run_vaenet(VaenetConfig(data=str(images), **VAE)))


@pytest.mark.parametrize("point", range(POINTS))
def test_vaenet_killed_anywhere_then_resumed_ends_like_an_uninterrupted_run(store, images, vaenet_ref, point):
    from nscnet.models.vaenet import run_vaenet

    _deep_case("vaenet", run_vaenet, VaenetConfig, VaenetConfig(data=str(images), **VAE), *vaenet_ref, store, point,
               same_clustering)


@pytest.fixture(scope="module")
def pretrain_ref(store, images):
    from nscnet.models.pretrain import run_pretrain

    return timed(lambda: run_pretrain(PretrainConfig(data=str(images), **PRE_TRAIN)))


def same_weights(run_id: str, reference: str) -> None:
    import torch

    got = torch.load(T.download_artifact(run_id, "model/weights.pt"), weights_only=True)
    want = torch.load(T.download_artifact(reference, "model/weights.pt"), weights_only=True)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert artifact_bytes(run_id, "assignments.csv") == artifact_bytes(reference, "assignments.csv")


@pytest.mark.parametrize("point", range(POINTS))
def test_pretrain_killed_anywhere_then_resumed_learns_the_same_weights(store, images, pretrain_ref, point):
    from nscnet.models.pretrain import run_pretrain

    _deep_case("pretrain", run_pretrain, PretrainConfig, PretrainConfig(data=str(images), **PRE_TRAIN), *pretrain_ref,
               store, point, same_weights)


def _deep_steps():
    from nscnet.models.nscnet import run_nscnet
    from nscnet.models.pretrain import run_pretrain
    from nscnet.models.vaenet import run_vaenet

    # step -> runner, config class, values, the fixture of its reference, what must be equal
    return {"nscnet": (run_nscnet, NscnetConfig, NSC, "nscnet_ref", same_clustering),
            "vaenet": (run_vaenet, VaenetConfig, VAE, "vaenet_ref", same_clustering),
            "pretrain": (run_pretrain, PretrainConfig, PRE_TRAIN, "pretrain_ref", same_weights)}


@pytest.mark.parametrize("step", ["nscnet", "vaenet", "pretrain"])
def test_deep_step_killed_after_a_checkpoint_resumes_mid_run_and_ends_like_an_uninterrupted_one(
        store, images, step, request):
    runner, cfg_class, values, ref, compare = _deep_steps()[step]
    reference = request.getfixturevalue(ref)[0]
    cfg = cfg_class(data=str(images), **values)
    epochs = cfg.epochs
    checkpoints = store / f"checkpoints-{step}"
    process = launch(step, store, *cli_args(cfg, cfg_class()), runs_dir=checkpoints)
    run_id = kill_after_epochs(process, checkpoints, epochs // 2)  # half the epochs done, the next one running
    assert T.get_run(run_id).info.status == "RUNNING"  # killed: nobody closed it
    assert len(T.metric_history(run_id, "train_loss")) < epochs
    # where it runs may change on resume (threads, workers); the result must not
    again = runner(cfg_class(resume=run_id, device="cpu", num_workers=0, threads=1))
    assert again["run_id"] == run_id and T.get_run(run_id).info.status == "FINISHED"
    steps = {s for s, _ in T.metric_history(run_id, "train_loss")}
    assert len(steps) == epochs, steps  # every epoch once: the killed ones before, the rest after the resume
    compare(run_id, reference["run_id"])
    assert_same_metrics(run_id, reference["run_id"])
    assert_nothing_left_running()
    RESULTS.append(f"{step}: killed after the checkpoint of epoch {epochs // 2}, resumed: same outputs and metrics")


# ------------------------------------------------------------------------------ a study worker

def study_cfg(blobs: Path, storage: Path, name: str) -> StudyConfig:
    return StudyConfig(data=str(blobs), params="k,whiten", k_min=2, k_max=8, n_trials=6, refine_k=False,
                       overrides="pca_dim=8,export=false,n_init=2,stability_runs=0,figures=false",
                       storage=str(storage), study_name=name, heartbeat_s=1, compare=False, seed=0)


def trial_table(storage: Path, name: str) -> dict[str, float]:
    import optuna
    from optuna.trial import TrialState

    from nscnet.studies.space import params_key
    from nscnet.studies.storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(str(storage), heartbeat_s=1))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    table = {params_key(t.params): t.value for t in complete}
    assert len(table) == len(complete)  # no parameter set ran twice
    return table


@pytest.fixture(scope="module")
def study_ref(store, blobs):
    from nscnet.studies import run_study

    cfg = study_cfg(blobs, store / "study-ref.journal", "ref")
    summary, seconds = timed(lambda: run_study(cfg))
    return trial_table(store / "study-ref.journal", "ref"), summary, seconds


@pytest.mark.parametrize("point", range(POINTS))
def test_study_worker_killed_anywhere_then_another_completes_the_same_study(store, blobs, study_ref, point):
    from nscnet.studies import run_study

    table, summary, seconds = study_ref
    storage, name = store / f"study-{point}.journal", f"kill-{point}"
    cfg = study_cfg(blobs, storage, name)
    kill = kill_at_random_moment("study", store, cli_args(cfg, StudyConfig()), work_s=seconds, point=point,
                                 state=lambda run: f"{len(trial_table(storage, name))} trials complete")
    again = run_study(cfg)
    assert trial_table(storage, name) == table
    assert again["best_value"] == summary["best_value"] and again["best_params"] == summary["best_params"]
    assert_killed_runs_closed(kill)
    record("study", point, kill, f"a new worker completed the study: the same {len(table)} trials and best value")
