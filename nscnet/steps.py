"""The registry of entry points: step name -> (config dataclass, runner).

The CLI (`nscnet.cli`) and the MLproject generator (`nscnet.mlproject`) both read this table,
so adding a step touches this file and the step's own module. Runners are imported lazily
(`"module:function"`) so `nscnet --help` stays fast and light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from nscnet import config as C


@dataclass(frozen=True)
class Step:
    name: str
    config: type
    runner: str  # "package.module:function", called with the config instance
    summary: str

    def load(self) -> Callable[[Any], Any]:
        module, function = self.runner.split(":")
        return getattr(importlib.import_module(module), function)


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step("synth", C.SynthConfig, "nscnet.audio.synth:run_synth", "write synthetic song recordings and label tracks"),
        Step("preprocess", C.PreprocessConfig, "nscnet.preprocess:run_preprocess", "cut songs and make the image dataset"),
        Step("basenet", C.BasenetConfig, "nscnet.models.basenet:run_basenet", "PCA/UMAP + k-means/OPTICS/HDBSCAN baseline"),
        Step("vaenet", C.VaenetConfig, "nscnet.models.vaenet:run_vaenet", "variational autoencoder, then clustering"),
        Step("nscnet", C.NscnetConfig, "nscnet.models.nscnet:run_nscnet", "DeepCluster-style end-to-end deep clustering"),
        Step("pretrain", C.PretrainConfig, "nscnet.models.pretrain:run_pretrain", "self-supervised (SimCLR) pretraining of the embedding network"),
        Step("predict", C.PredictConfig, "nscnet.predict:run_predict", "assign new segments to a trained run's clusters"),
        Step("report", C.ReportConfig, "nscnet.report:run_report", "an HTML page to see and hear every cluster of a run"),
        Step("curate", C.CurateConfig, "nscnet.report.curate:run_curate", "merge, rename, drop clusters: a curated run"),
        Step("zipf", C.ZipfConfig, "nscnet.analysis.zipf:run_zipf", "Zipf's law and repertoire size of a clustering"),
        Step("entropy", C.EntropyConfig, "nscnet.analysis.entropy:run_entropy", "chromagram note entropy of every song"),
        Step("study", C.StudyConfig, "nscnet.studies:run_study", "Optuna study over a model's hyperparameters"),
        Step("ui", C.UiConfig, "nscnet.dashboards:run_ui", "start the MLflow UI and the Optuna dashboard"),
    )
}
