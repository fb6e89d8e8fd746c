"""Busy folders and stores: one writer at a time (real processes holding real locks), and runs
left RUNNING by a process that is gone marked KILLED when a step starts."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from nscnet.cli import main
from nscnet.config import BasenetConfig, PredictConfig, PreprocessConfig, SynthConfig
from nscnet.images.dataset import read_dataset
from nscnet.runs import locks, tracking as T
from tests.conftest import ROOT

PRE = dict(n_mels=32, frames=64, duration_s=1.0)


def hold(target: Path, *, seconds: float = 120, kind: str = "folder", marker: Path | None = None) -> subprocess.Popen:
    """A real process holding the lock of `target` (`kind`: folder or journal) for `seconds`;
    it prints `held` once it holds it and touches `marker` just before it lets go."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from nscnet.runs import locks
        if {kind!r} == "journal":
            lock = locks.JournalFlock({str(target)!r}); lock.acquire()
        else:
            lock = locks.Held({str(target)!r})
        print("held", flush=True)
        time.sleep({seconds})
        if {str(marker) if marker else ''!r}:
            Path({str(marker)!r}).touch()
        lock.release()
    """)
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout.readline().strip() == "held", process.communicate()[0]
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    from nscnet.audio.synth import write_synthetic

    out = tmp_path_factory.mktemp("busy-audio") / "audio"
    write_synthetic(SynthConfig(out=str(out), songs=60, recordings=3, types=4, seed=0))
    return out


def test_two_preprocess_runs_into_one_folder_the_second_waits_then_finds_the_dataset(tracking, tmp_path, audio, caplog):
    from nscnet.images.preprocess import preprocess

    out = tmp_path / "ds"
    args = [f"--audio={audio}", f"--out={out}", "--n_mels=32", "--frames=64", "--duration_s=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NSCNET_FIGURE_PNG": "false", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "nscnet", "preprocess", *args], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock_file = locks.lock_path(out)
    deadline = time.monotonic() + 120
    while first.poll() is None and time.monotonic() < deadline:  # until the first holds the folder
        try:
            if json.loads(lock_file.read_text() or "{}").get("pid") == first.pid:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    assert first.poll() is None, first.communicate()[0]
    with caplog.at_level(logging.WARNING, logger="nscnet.runs.locks"):
        second = preprocess(PreprocessConfig(audio=str(audio), out=str(out), **PRE))  # this process, meanwhile
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 0, output
    waited = " ".join(r.getMessage() for r in caplog.records)
    assert f"dataset folder {out} is in use by pid {first.pid} on host {socket.gethostname()}" in waited
    assert "nscnet preprocess" in waited and "waiting for it to finish" in waited
    assert second.cached  # it waited, then found the first one's dataset complete
    dataset = read_dataset(out)
    assert len(dataset) == second.n_ok == 60 and not list(out.glob("*.partial"))
    assert json.loads((out / "preprocess.json").read_text())["complete"]
    assert lock_file.read_text() == ""  # nobody holds it any more


def test_a_busy_folder_with_no_wait_is_a_one_line_error_naming_the_holder(tracking, tmp_path, audio, capsys,
                                                                           monkeypatch):
    out = tmp_path / "ds"
    holder = hold(out)
    try:
        monkeypatch.setenv(locks.WAIT_ENV, "0")
        code = main(["preprocess", f"--audio={audio}", f"--out={out}", "--n_mels=32", "--frames=64"])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nscnet")]
        assert code == 1 and len(err) == 1, err
        err = err[0]
        assert f"dataset folder {out} is in use by pid {holder.pid} on host {socket.gethostname()}" in err
        assert not out.exists()  # nothing written
        monkeypatch.setenv(locks.WAIT_ENV, "0.5")  # a bounded wait ends the same way, saying how long it waited
        assert main(["synth", f"--out={out}", "--songs=4"]) == 1
        assert f"output folder {out} is still in use by pid {holder.pid}" in capsys.readouterr().err
        monkeypatch.setenv(locks.WAIT_ENV, "soon")
        assert main(["synth", f"--out={out}", "--songs=4"]) == 1
        assert "NSCNET_LOCK_WAIT_S='soon' is not a number" in capsys.readouterr().err
    finally:
        stop(holder)


def test_a_killed_holder_never_blocks(tmp_path):
    target = tmp_path / "out"
    holder = hold(target)
    with pytest.raises(locks.Busy, match=f"pid {holder.pid}"):
        with locks.exclusive(target, wait=False):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=30)
    with locks.exclusive(target, wait=False) as path:  # at once: the kernel dropped the dead one's lock
        assert json.loads(path.read_text())["pid"] == os.getpid()
    # the same folder spelled another way is the same lock
    assert locks.lock_path(tmp_path / "x" / ".." / "out") == locks.lock_path(target)


def test_predict_into_a_busy_export_folder_waits_for_the_other_writer(tracking, tmp_path, caplog):
    from nscnet.models.basenet import run_basenet
    from nscnet.models.predict import run_predict
    from tests.fixtures_cluster import make_blob_dataset

    blobs = make_blob_dataset(tmp_path / "blobs", classes=3, per_class=10)
    trained = run_basenet(BasenetConfig(data=str(blobs), k=3, pca_dim=4, figures=False, stability_runs=0))
    out = tmp_path / "exports"
    marker = tmp_path / "released"
    holder = hold(out, seconds=1.0, marker=marker)
    try:
        with caplog.at_level(logging.WARNING, logger="nscnet.runs.locks"):
            result = run_predict(PredictConfig(run_id=trained["run_id"], data=str(blobs), out=str(out)))
    finally:
        stop(holder)
    assert marker.exists()  # it wrote only after the other process let go
    assert f"export folder {out} is in use by pid {holder.pid}" in caplog.text
    assert result["n_segments"] == 30 and (out / "assignments.csv").is_file()


def test_a_run_is_never_trained_by_two_processes_at_once(tracking, tmp_path, monkeypatch):
    from nscnet.models import training

    monkeypatch.setenv(training.RUNS_DIR_ENV, str(tmp_path / "checkpoints"))
    holder = hold(tmp_path / "checkpoints" / "abc123")
    try:
        with pytest.raises(locks.Busy, match=f"run abc123 .* is in use by pid {holder.pid}"):
            training.Checkpointer("abc123", log_to_mlflow=False)
    finally:
        stop(holder)
    first = training.Checkpointer("abc123", log_to_mlflow=False)  # free again
    first.close()
    training.Checkpointer("abc123", log_to_mlflow=False).close()


def test_a_journal_lock_dies_with_its_holder_and_excludes_live_writers(tmp_path):
    import optuna

    from nscnet.studies.storage import open_storage

    journal = tmp_path / "study.journal"
    killed = hold(journal, kind="journal")
    killed.send_signal(signal.SIGKILL)  # killed while holding the journal's lock
    killed.communicate(timeout=30)
    storage = open_storage(str(journal), heartbeat_s=1)
    study = optuna.create_study(study_name="s", storage=storage)  # no 30 s wait for a stale lock
    marker = tmp_path / "released"
    live = hold(journal, kind="journal", seconds=1.0, marker=marker)
    try:
        study.set_user_attr("written", True)  # an append: waits for the live holder
    finally:
        stop(live)
    assert marker.exists()
    assert optuna.load_study(study_name="s", storage=open_storage(str(journal), heartbeat_s=1)).user_attrs == {"written": True}


# ------------------------------------------------------------------------------ stale runs

def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_runs_of_dead_processes_are_marked_killed_when_a_step_starts(tracking):
    import psutil

    T.setup("nscnet")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("nscnet").experiment_id
    host = socket.gethostname()
    me = {"nscnet.pid": str(os.getpid()), "nscnet.pid_started": f"{psutil.Process().create_time():.3f}",
          "nscnet.host": host}
    dead = client.create_run(experiment, tags={**me, "nscnet.pid": str(_dead_pid())}).info.run_id
    reused = client.create_run(experiment, tags={**me, "nscnet.pid_started": "12345.0"}).info.run_id  # pid reused
    alive = client.create_run(experiment, tags=me).info.run_id
    elsewhere = client.create_run(experiment, tags={**me, "nscnet.pid": str(_dead_pid()), "nscnet.host": "other-host"}).info.run_id
    untagged = client.create_run(experiment).info.run_id
    other_experiment = client.create_experiment("elsewhere")
    dead_there = client.create_run(other_experiment, tags={**me, "nscnet.pid": str(_dead_pid())}).info.run_id

    with T.start_run(BasenetConfig(), "basenet") as run:
        tags = T.get_run(run.info.run_id).data.tags
        assert tags["nscnet.pid"] == str(os.getpid()) and tags["nscnet.host"] == host
    status = {name: T.get_run(rid).info.status for name, rid in
              dict(dead=dead, reused=reused, alive=alive, elsewhere=elsewhere, untagged=untagged,
                   dead_there=dead_there).items()}
    assert status == dict(dead="KILLED", reused="KILLED", alive="RUNNING", elsewhere="RUNNING", untagged="RUNNING",
                          dead_there="KILLED")
    note = T.get_run(dead).data.tags["nscnet.ended_by"]
    assert f"on {host} ended without closing the run; marked KILLED by process {os.getpid()}" in note
    assert T.get_run(dead).info.end_time is not None
    for rid in (alive, elsewhere, untagged):
        client.set_terminated(rid)


def test_process_alive_tells_live_dead_and_reused_pids_apart():
    import psutil

    started = psutil.Process().create_time()
    assert T.process_alive(os.getpid()) and T.process_alive(os.getpid(), f"{started:.3f}")
    assert not T.process_alive(os.getpid(), started - 3600)   # same pid, another process
    assert not T.process_alive(_dead_pid())
    assert not T.process_alive("not-a-pid")
    zombie = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not T.process_alive(zombie.pid)  # exited, not yet reaped
    zombie.wait()
