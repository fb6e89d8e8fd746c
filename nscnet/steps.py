"""The registry of entry points: step name -> config dataclass, runner and optional capabilities.

The CLI (`nscnet.cli`), the MLproject generator (`nscnet.mlproject`), studies
(`nscnet.studies`) and `nscnet predict` all read this table, so adding a step touches this file
and the step's own module. Code is named as `"module:attribute"` and imported lazily, so
`nscnet --help` stays fast and light. The optional capabilities:

- `features` (studies): `"module:function"` computing a step's expensive, K-independent
  features `(cfg, dataset) -> (N, d)`, which its runner then accepts as `runner(cfg, features=...)`;
  `feature_fields`: `"module:NAME"` of the tuple of config fields those features depend on
  (the study's feature cache key);
- `saves_model` (predict): a run of this step logs its model in the one saved-model format
  (`model/`, `nscnet.models.saved`), which `nscnet predict` rebuilds to assign new segments.

The networks such models are built on have their own registry, `nscnet.models.backbones.BACKBONES`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from nscnet import config as C


def _load(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Step:
    name: str
    config: type
    runner: str  # "package.module:function", called with the config instance
    summary: str
    features: str = ""        # studies: "module:function" (cfg, dataset) -> features; runner takes features=
    feature_fields: str = ""  # studies: "module:NAME", the config fields those features depend on
    saves_model: bool = False  # predict: its runs log `model/` (nscnet.models.saved)

    def load(self) -> Callable[[Any], Any]:
        return _load(self.runner)

    def load_features(self) -> tuple[Callable[[Any, Any], Any], tuple[str, ...] | None] | None:
        """(compute_features, feature fields or None) when studies can cache this step's features."""
        if not self.features:
            return None
        return _load(self.features), (tuple(_load(self.feature_fields)) if self.feature_fields else None)


def predictable() -> list[str]:
    """Names of the steps whose runs `nscnet predict` can use."""
    return [name for name, step in STEPS.items() if step.saves_model]


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step("synth", C.SynthConfig, "nscnet.audio.synth:run_synth", "write synthetic song recordings and label tracks"),
        Step("preprocess", C.PreprocessConfig, "nscnet.images.preprocess:run_preprocess", "cut songs and make the image dataset"),
        Step("basenet", C.BasenetConfig, "nscnet.models.basenet:run_basenet", "PCA/UMAP + k-means/OPTICS/HDBSCAN baseline",
             features="nscnet.models.basenet:compute_features", feature_fields="nscnet.models.basenet:FEATURE_FIELDS",
             saves_model=True),
        Step("vaenet", C.VaenetConfig, "nscnet.models.vaenet:run_vaenet", "variational autoencoder, then clustering",
             saves_model=True),
        Step("nscnet", C.NscnetConfig, "nscnet.models.nscnet:run_nscnet", "DeepCluster-style end-to-end deep clustering",
             saves_model=True),
        Step("pretrain", C.PretrainConfig, "nscnet.models.pretrain:run_pretrain", "self-supervised (SimCLR) pretraining of the embedding network",
             saves_model=True),
        Step("predict", C.PredictConfig, "nscnet.models.predict:run_predict", "assign new segments to a trained run's clusters"),
        Step("report", C.ReportConfig, "nscnet.report:run_report", "an HTML page to see and hear every cluster of a run"),
        Step("curate", C.CurateConfig, "nscnet.report.curate:run_curate", "merge, rename, drop clusters: a curated run"),
        Step("zipf", C.ZipfConfig, "nscnet.analysis.zipf:run_zipf", "Zipf's law and repertoire size of a clustering"),
        Step("entropy", C.EntropyConfig, "nscnet.analysis.entropy:run_entropy", "chromagram note entropy of every song"),
        Step("auto", C.AutoConfig, "nscnet.models.auto:run_auto", "candidate recipes on the data, one chosen without labels"),
        Step("study", C.StudyConfig, "nscnet.studies:run_study", "Optuna study over a model's hyperparameters"),
        Step("ui", C.UiConfig, "nscnet.ui.dashboards:run_ui", "start the MLflow UI and the Optuna dashboard"),
    )
}
