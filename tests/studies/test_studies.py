"""Studies on tiny blob datasets with real Optuna storages (journal file, PostgreSQL) and a real
SQLite MLflow store: K binary search vs exhaustive scan, two workers without duplicates, a
worker killed mid-trial, no password leaks, search space derivation."""

from __future__ import annotations

import json
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from nscnet.clustering.evaluate import cluster_features, score
from nscnet.config import BasenetConfig, ConfigError, NscnetConfig, StudyConfig
from nscnet.images.dataset import read_dataset
from nscnet.models.basenet import compute_features, evaluation_params
from nscnet.runs import tracking as nstracking
from nscnet.studies import run_study
from nscnet.studies.space import grid, next_k, params_key, search_space
from nscnet.studies.storage import mask_password, open_storage
from nscnet.studies.worker import KEY
from tests.fixtures_studies import (blob_data, database, mlflow_server, postgres, start_worker,  # noqa: F401
                                    wait_all, worker_env)

FAST = "pca_dim=16,export=false,n_init=2"


def _load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage, heartbeat_s=1))


def _params_sets(study: optuna.Study, states=(TrialState.COMPLETE,)) -> list[str]:
    return [json.dumps(t.params, sort_keys=True) for t in study.get_trials(states=states)]


def test_search_space_comes_from_the_config_fields():
    dims = {d.name: d for d in search_space(BasenetConfig, k_min=64, k_max=2048)}
    assert set(dims) == {"normalize", "pca_dim", "whiten", "l2", "k"}
    assert dims["k"].grid == (64, 128, 256, 512, 1024, 2048)
    assert len(grid(list(dims.values()), seed=0)) == 2 * 2 * 2 * 2 * 6
    assert {"arcface", "epoch_length"} <= {d.name for d in search_space(NscnetConfig, k_min=64, k_max=64)}
    with pytest.raises(ConfigError, match="umap_dim"):
        search_space(BasenetConfig, k_min=2, k_max=8, only=("umap_dim",))
    assert next_k({64: 0.2, 128: 0.5, 256: 0.4}, maximize=True) == 192
    assert next_k({64: 0.2, 128: 0.5, 256: 0.4}, maximize=False) == 96  # best 64, better neighbour 128
    assert next_k({5: 0.5, 6: 0.6}, maximize=True) is None
    # workers starting together take different feature settings: consecutive points alternate
    points = grid([dims["pca_dim"], dims["k"]], seed=3, k_name="k")
    assert sorted(map(params_key, points)) == sorted(map(params_key, grid([dims["pca_dim"], dims["k"]], seed=3)))
    assert all(a["pca_dim"] != b["pca_dim"] for a, b in zip(points, points[1:]))
    assert next_k({4: 0.1, 8: 0.5, 9: 0.4}, maximize=True) == 6  # better side done: the other side


def test_k_binary_search_matches_exhaustive_scan_with_half_the_trials(tracking, tmp_path):
    data = blob_data(tmp_path / "data", classes=7, per_class=14, noise=0.12, seed=3)
    base = BasenetConfig(data=str(data), pca_dim=16, export=False, n_init=2)
    dataset = read_dataset(data)
    params = evaluation_params(base)
    features = compute_features(base, dataset)
    exhaustive = {}
    for k in range(2, 33):  # what a scan of every K rates best
        labels, processed, result = cluster_features(features, params, k=k)
        exhaustive[k] = score(processed, result, params)["silhouette"]
    best_k = max(exhaustive, key=exhaustive.get)

    summary = run_study(StudyConfig(data=str(data), params="k", k_min=2, k_max=32, n_trials=31,
                                    overrides="pca_dim=16,export=false,n_init=2", compare=False,
                                    storage=str(tmp_path / "k.journal"), study_name="k-search"))
    study = _load(str(tmp_path / "k.journal"), "k-search")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    print(f"exhaustive best K={best_k} ({exhaustive[best_k]:.4f}); study best {summary['best_params']} "
          f"({summary['best_value']:.4f}) in {len(complete)} trials")
    assert len(complete) <= len(exhaustive) // 2
    assert summary["best_value"] >= exhaustive[best_k] - 0.01 * abs(exhaustive[best_k])
    phases = [t.user_attrs["nscnet:phase"] for t in complete]
    assert phases.count("grid") == 5 and phases.count("refine") >= 1
    assert len(set(_params_sets(study))) == len(complete)
    # MLflow: the study is a parent run; every trial a nested run with its tags
    runs = nstracking.search_runs("nscnet")
    parent = runs[runs["tags.nscnet.step"] == "study"]
    assert len(parent) == 1
    trials = runs[runs["tags.optuna.study_name"] == "k-search"]
    trials = trials[trials["tags.nscnet.step"] == "basenet"]
    assert len(trials) == len(complete)
    assert set(trials["tags.mlflow.parentRunId"]) == {parent["run_id"].iloc[0]}
    assert sorted(trials["tags.optuna.trial_number"].astype(int)) == sorted(t.number for t in complete)
    assert {"figures/optimization_history.html", "figures/slice.html"} <= set(
        nstracking.list_artifacts(parent["run_id"].iloc[0], "figures"))
    assert float(parent["metrics.best_silhouette"].iloc[0]) == pytest.approx(summary["best_value"])
    # one post-processing setting: its features were computed once and reused for every K
    assert parent["metrics.feature_cache_misses"].iloc[0] == 1
    assert parent["metrics.feature_cache_hits"].iloc[0] == len(complete) - 1
    assert parent["params.storage"].iloc[0].endswith("k.journal")


def test_trials_differing_only_in_whiten_and_l2_share_one_feature_computation(tracking, tmp_path):
    data = blob_data(tmp_path / "data", classes=4, per_class=10, seed=5)
    storage = tmp_path / "wl.journal"
    summary = run_study(StudyConfig(data=str(data), params="whiten,l2", n_trials=4, compare=False,
                                    overrides="pca_dim=16,export=false,n_init=2,k=4",
                                    storage=str(storage), study_name="whiten-l2"))
    assert summary["trials"]["complete"] == 4
    runs = nstracking.search_runs("nscnet")
    parent = runs[runs["tags.nscnet.step"] == "study"]
    assert parent["metrics.feature_cache_misses"].iloc[0] == 1  # one PCA for the 4 settings
    assert parent["metrics.feature_cache_hits"].iloc[0] == 3
    assert len(list((tmp_path / "wl.journal.cache" / "whiten-l2").glob("*.npy"))) == 1
    # the shared features give each trial the silhouette of its own full pipeline
    dataset = read_dataset(data)
    for trial in _load(str(storage), "whiten-l2").get_trials(states=(TrialState.COMPLETE,)):
        cfg = BasenetConfig(data=str(data), pca_dim=16, export=False, n_init=2, k=4, **trial.params)
        params = evaluation_params(cfg)
        labels, processed, result = cluster_features(compute_features(cfg, dataset), params)
        assert trial.value == pytest.approx(score(processed, result, params)["silhouette"], abs=1e-6)


def _two_workers(tmp_path, storage: str, n_trials: int, name: str) -> optuna.Study:
    data = blob_data(tmp_path / "data", classes=4, per_class=12, seed=1)
    args = ["--data", str(data), "--params", "k,whiten,l2", "--k-min", "2", "--k-max", "16",
            "--n-trials", str(n_trials), "--overrides", FAST, "--storage", storage, "--study-name", name,
            "--heartbeat-s", "1", "--compare", "false"]
    workers = [start_worker(tmp_path, *args, log_name=f"worker{i}") for i in range(2)]
    wait_all(workers)
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert [w.returncode for w in workers] == [0, 0], logs
    study = _load(storage, name)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == n_trials
    grid_sets = [json.dumps(t.params, sort_keys=True) for t in study.get_trials()
                 if t.state in (TrialState.COMPLETE, TrialState.RUNNING) and t.user_attrs.get("nscnet:phase") == "grid"]
    assert len(grid_sets) == len(set(grid_sets)) == n_trials  # 16 grid points > n_trials: all grid
    assert len({t.user_attrs.get(KEY) for t in complete}) == n_trials
    return study


def test_two_workers_share_a_journal_without_duplicates(tracking, tmp_path):
    _two_workers(tmp_path, str(tmp_path / "shared.journal"), 10, "journal-2w")
    runs = nstracking.search_runs("nscnet")
    assert len(runs[runs["tags.nscnet.step"] == "study"]) == 2  # one parent run per worker


@pytest.mark.slow
def test_lab_deployment_mlflow_server_on_postgresql_serves_runs_and_a_study_from_other_processes(
        tmp_path, postgres, monkeypatch):
    # docs/studies.md "Several machines": one PostgreSQL with two databases (MLflow's backend
    # store, Optuna's storage) and one `mlflow server --serve-artifacts`; every client process
    # knows only the server URL and the Optuna URL (whose password nothing shows)
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    served = tmp_path / "served-artifacts"
    from nscnet.studies.storage import database_url

    # the installed driver named (SQLAlchemy 2.1 picks psycopg 3 for a bare postgresql://)
    backend = database_url(database(postgres, "mlflow"))
    with mlflow_server(backend, served, tmp_path / "server.log") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        client_dir = tmp_path / "machine-a"
        client_dir.mkdir()
        data = blob_data(tmp_path / "songs", classes=3, per_class=10, seed=4)
        done = subprocess.run([sys.executable, "-m", "nscnet", "basenet", "--data", str(data), "--k", "3",
                               "--pca_dim", "8", "--experiment", "lab"], cwd=client_dir, env=worker_env(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        password = "pw-s3cret-9731"  # the Optuna URL's password is never logged, printed or shown
        assert password in postgres and password not in mask_password(postgres)
        study = _two_workers(tmp_path, postgres, 4, "lab-2w")  # two more processes, Optuna on PostgreSQL
        assert not (client_dir / "mlflow.db").exists() and not (tmp_path / "mlflow.db").exists()
        for i in range(2):
            assert password not in (tmp_path / f"worker{i}.log").read_text()

        client = MlflowClient(tracking_uri=url)  # everything read back through the server
        [basenet] = client.search_runs([client.get_experiment_by_name("lab").experiment_id])
        assert basenet.data.params["k"] == "3" and basenet.data.tags["nscnet.step"] == "basenet"
        assert basenet.info.status == "FINISHED" and 0 < basenet.data.metrics["silhouette"] <= 1
        assert basenet.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, not a path on this machine
        local = client.download_artifacts(basenet.info.run_id, "assignments.csv", str(tmp_path / "back"))
        assert len(open(local).read().splitlines()) == 31
        assert {"model/model.json", "model/arrays.npz"} <= {a.path for a in client.list_artifacts(
            basenet.info.run_id, "model")}
        assert any(served.rglob("assignments.csv"))  # stored by the server, where it was told to
        runs = client.search_runs([client.get_experiment_by_name("nscnet").experiment_id])
        steps = [r.data.tags.get("nscnet.step") for r in runs]
        assert steps.count("study") == 2 and steps.count("basenet") >= 4  # two workers, four trials
        silhouettes = [r.data.metrics.get("silhouette") for r in runs if r.data.tags.get("nscnet.step") == "basenet"]
        for trial in study.get_trials(states=(TrialState.COMPLETE,)):  # each trial's value is its run's metric
            assert any(v is not None and abs(v - trial.value) < 1e-9 for v in silhouettes)
        for run in runs:
            assert not any(password in str(v) for v in [*run.data.params.values(), *run.data.tags.values()])
        assert mask_password(postgres) in [r.data.params.get("storage") for r in runs]


def test_worker_killed_mid_trial_is_failed_and_retried(tracking, tmp_path):
    # a dataset big enough that a trial runs long enough to be killed inside it
    data = blob_data(tmp_path / "data", classes=5, per_class=120, height=16, width=32, seed=2)
    storage, name, n_trials = str(tmp_path / "kill.journal"), "kill", 5
    args = ["--data", str(data), "--params", "k,whiten", "--k-min", "2", "--k-max", "16", "--n-trials",
            str(n_trials), "--overrides", "pca_dim=32,export=false,n_init=20,kmeans_backend=sklearn",
            "--storage", storage, "--study-name", name, "--heartbeat-s", "1", "--compare", "false"]
    killed_number = None
    for attempt in range(3):  # the kill can land between two trials: then start another doomed worker
        doomed = start_worker(tmp_path, *args, log_name=f"doomed{attempt}")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and doomed.poll() is None:
            time.sleep(0.05)
            try:
                study = _load(storage, name)
            except KeyError:  # the study is not created yet
                continue
            if any(t.user_attrs.get(KEY) for t in study.get_trials(states=(TrialState.RUNNING,))):
                doomed.send_signal(signal.SIGKILL)
                break
        doomed.wait(10)
        running = _load(storage, name).get_trials(states=(TrialState.RUNNING,))
        if running:
            killed_number = running[0].number
            break
    assert killed_number is not None, (tmp_path / "doomed0.log").read_text()
    survivor = start_worker(tmp_path, *args, log_name="survivor")
    wait_all([survivor])
    assert survivor.returncode == 0, (tmp_path / "survivor.log").read_text()
    study = _load(storage, name)
    killed = study.trials[killed_number]
    assert killed.state == TrialState.FAIL
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == n_trials
    retries = [t for t in complete if t.user_attrs.get("nscnet:retry_of") == killed_number]
    # the retry runs the killed trial's claimed parameter set (the kill can land after the claim
    # but before Optuna recorded all the suggested params, even between two of them: a clean-clone
    # run saw {'whiten': True} killed and {'whiten': True, 'k': 2} retried, so compare the claims,
    # and every param the killed trial did record)
    assert len(retries) == 1 and retries[0].user_attrs[KEY] == killed.user_attrs[KEY]
    assert killed.params.items() <= retries[0].params.items()
    assert len(set(_params_sets(study))) == n_trials


def test_bad_study_parameters_are_clear_errors(tracking, tmp_path):
    data = blob_data(tmp_path / "data", classes=3, per_class=6)
    with pytest.raises(ConfigError, match="no_such_field"):
        run_study(StudyConfig(data=str(data), overrides="no_such_field=3", storage=str(tmp_path / "s.journal")))
    with pytest.raises(ConfigError, match="k_min=9"):
        StudyConfig(k_min=9, k_max=4)
    with pytest.raises(ConfigError, match="objective='no_metric'"):
        run_study(StudyConfig(data=str(data), params="k", k_min=2, k_max=4, n_trials=2, objective="no_metric",
                              overrides=FAST, storage=str(tmp_path / "s.journal"), compare=False))



def test_storage_texts_hide_passwords_and_name_an_installed_driver():
    from nscnet.studies.storage import database_url

    assert mask_password("postgresql+psycopg2://user:p%40ss@db:5432/optuna") == "postgresql+psycopg2://user:***@db:5432/optuna"
    assert mask_password("./optuna.journal") == "./optuna.journal"
    assert database_url("postgresql://u:p@h/db").startswith(("postgresql+psycopg2://", "postgresql://"))
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_study_overrides_may_name_a_preset_under_the_other_overrides():
    from nscnet.studies.study import model_config

    base = model_config(StudyConfig(model="nscnet", overrides="preset=quality,min_cluster_size=5", seed=2))
    assert (base.backbone, base.final_algorithm, base.min_cluster_size, base.seed) == ("small_cnn", "auto", 5, 2)
    with pytest.raises(ConfigError, match="preset"):
        model_config(StudyConfig(model="basenet", overrides="preset=quality"))
