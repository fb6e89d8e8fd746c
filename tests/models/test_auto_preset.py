"""`nscnet auto`: every candidate recipe a nested MLflow run, the choice and its criterion on the parent."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient

from nscnet.config import AutoConfig, ConfigError
from nscnet.models.auto import choose, run_auto
from tests.fixtures_cluster import make_blob_dataset


def test_auto_runs_every_candidate_nested_and_logs_its_choice(tracking, tmp_path):
    data = make_blob_dataset(tmp_path / "blobs", classes=4, per_class=15, height=8, width=8)
    result = run_auto(AutoConfig(data=str(data), k=4, truth=True, experiment="auto-test",
                                 candidates="pca-kmeans,umap-kmeans,umap-hdbscan"))
    client = MlflowClient()
    parent = client.get_run(result["run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(run.info.run_name for run in children) == [
        "auto candidate pca-kmeans", "auto candidate umap-hdbscan", "auto candidate umap-kmeans"]
    assert all(run.info.status == "FINISHED" and run.data.params["k"] == "4" for run in children)
    choice = parent.data.params["auto_choice"]
    assert parent.data.tags["nscnet.auto.choice"] == choice == result["choice"]
    assert parent.data.tags["nscnet.auto.criterion"] == "silhouette"
    assert parent.data.tags["nscnet.auto.candidates"] == "pca-kmeans,umap-kmeans,umap-hdbscan"
    # the choice is the candidate whose nested run has the best silhouette
    silhouettes = {run.info.run_name.split()[-1]: run.data.metrics["silhouette"] for run in children}
    assert silhouettes[choice] == max(silhouettes.values())  # on a tie: the first candidate given
    assert parent.data.metrics[f"criterion_{choice}"] == pytest.approx(silhouettes[choice])
    chosen_run = parent.data.tags["nscnet.auto.choice_run"]
    assert client.get_run(chosen_run).info.run_name == f"auto candidate {choice}"
    table = json.loads(open(client.download_artifacts(parent.info.run_id, "auto_candidates.json", str(tmp_path))).read())
    assert set(table) == set(silhouettes) and table[choice]["run_id"] == chosen_run
    assert parent.data.metrics["nmi_truth"] == pytest.approx(table[choice]["nmi_truth"])
    assert all(table[name]["n_clusters"] == 4 for name in table)  # k honoured by HDBSCAN too


def test_choose_flips_lower_is_better_and_skips_missing():
    assert choose({"a": 0.2, "b": 0.5, "c": None}, "silhouette") == "b"
    assert choose({"a": 0.2, "b": 0.5}, "davies_bouldin") == "a"
    assert choose({"a": None}, "silhouette") is None


def test_default_candidates_are_every_recipe():
    from nscnet.presets import AUTO_CANDIDATES, auto_candidates

    assert auto_candidates("auto") == ["pca-kmeans", "umap-kmeans", "umap-hdbscan", "quality"]
    assert set(auto_candidates("auto")) == set(AUTO_CANDIDATES)
    assert auto_candidates(" pca-kmeans, quality ") == ["pca-kmeans", "quality"]


def test_unknown_candidate_fails_before_any_run(tracking, tmp_path):
    data = make_blob_dataset(tmp_path / "blobs", classes=2, per_class=5, height=4, width=4)
    with pytest.raises(ConfigError, match="'bogus' is not a candidate"):
        run_auto(AutoConfig(data=str(data), candidates="pca-kmeans,bogus"))
    with pytest.raises(ConfigError, match="at least 2"):
        run_auto(AutoConfig(data=str(data), candidates="pca-kmeans"))


def test_a_folder_that_is_not_a_dataset_fails_before_any_run(tracking, tmp_path):
    from nscnet.config import DataError

    def runs():
        client = MlflowClient()
        return [run.info.run_id for experiment in client.search_experiments()
                for run in client.search_runs([experiment.experiment_id])]

    (tmp_path / "empty").mkdir()
    before = runs()
    with pytest.raises(DataError, match="not a dataset folder"):
        run_auto(AutoConfig(data=str(tmp_path / "empty")))
    assert runs() == before
