"""The config dataclasses drive the CLI and MLproject; MLproject never drifts from them."""

from __future__ import annotations

import pytest
import yaml

from nscnet import config as C
from nscnet import presets
from nscnet.cli import config_from_args
from nscnet.mlproject import NOT_PARAMETERS, render
from nscnet.steps import STEPS
from tests.conftest import ROOT


def test_mlproject_file_is_generated_from_the_dataclasses():
    assert (ROOT / "MLproject").read_text() == render(), "run `make mlproject` to regenerate MLproject"


def test_mlproject_defaults_equal_dataclass_defaults_and_preset_entry_points_the_presets():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    entries = {name: (name, None) for name in STEPS}
    entries.update({f"{step}-{preset}": (step, preset) for step in presets.PRESETS
                    for preset, values in presets.PRESETS[step].items() if values})
    assert set(project["entry_points"]) == set(entries) and "nscnet-quality" in entries
    for entry, (name, preset) in entries.items():
        declared = project["entry_points"][entry]["parameters"]
        # the default of every parameter, parsed as the CLI parses it, equals the dataclass default
        # (of a preset's entry point: the preset's value), so what MLflow logs is what runs
        cfg = config_from_args(name, [f"--{k}={v['default']}" for k, v in declared.items()])
        assert cfg == (presets.config(name, preset) if preset else STEPS[name].config()), entry
        assert set(declared) == {f.name for f in C.fields(STEPS[name].config)} - set(NOT_PARAMETERS)
        assert "--preset" not in project["entry_points"][entry]["command"]


def test_cli_accepts_underscore_and_dash_spellings_and_booleans():
    cfg = config_from_args("basenet", ["--pca-dim", "64", "--whiten", "false", "--k_values", "4,8", "--truth"])
    assert cfg.pca_dim == 64 and cfg.whiten is False and cfg.k_values == (4, 8) and cfg.truth is True


@pytest.mark.parametrize(
    "cls, changes, word",
    [
        (C.BasenetConfig, {"algorithm": "dbscan"}, "dbscan"),
        (C.BasenetConfig, {"k": -1}, "k=-1"),  # 0 is auto (nscnet.defaults)
        (C.PreprocessConfig, {"highpass_hz": 20000, "sample_rate": 22050}, "highpass_hz=20000"),
        (C.StudyConfig, {"k_min": 128, "k_max": 64}, "k_min=128"),
        (C.VaenetConfig, {"k_values": (4, -1)}, "k_values"),
    ],
)
def test_bad_values_raise_config_error_naming_the_value(cls, changes, word):
    with pytest.raises(C.ConfigError, match=word):
        cls(**changes)


def test_steps_are_made_of_groups_and_defaults_change_without_declaring_fields_again():
    cfg = C.PretrainConfig(backbone="vae_encoder", embedding_dim=32)
    assert cfg.group(C.Network) == C.Network(backbone="vae_encoder", embedding_dim=32)
    assert C.PretrainConfig().backbone == "small_cnn" and C.NscnetConfig().backbone == ""  # "": pretrained_run's
    assert C.with_network_defaults(C.NscnetConfig()).backbone == "efficientnet_b0"
    assert C.VaenetConfig().pca_dim == 0 and C.BasenetConfig().pca_dim == -1  # -1: auto (nscnet.defaults)
    help_of = {f.name: f.metadata["help"] for f in C.fields(C.PretrainConfig)}
    assert help_of["freq_masks"].endswith("per view") and help_of["projection_dim"]
    # no group inherits another, and a step takes only the groups it uses
    groups = (C.Data, C.Postprocess, C.Cluster, C.Sweep, C.Evaluate, C.Umap, C.Train, C.Machine, C.EarlyStop,
              C.Network, C.Augment, C.Contrastive)
    assert all(group.__bases__ == (C.Group,) for group in groups)
    assert not issubclass(C.PretrainConfig, C.EarlyStop) and not issubclass(C.NscnetConfig, C.Sweep)
    with pytest.raises(C.ConfigError, match="embedding_dim=0"):  # a group's own check runs in every step
        C.PretrainConfig(embedding_dim=0)
    with pytest.raises(TypeError, match="no inherited field"):
        C.defaults(nope=1)(type("X", (C.Group,), {}))


def test_params_flatten_tuples():
    params = C.to_params(C.BasenetConfig(k_values=(64, 128)))
    assert params["k_values"] == "64,128" and params["pca_dim"] == -1


@pytest.mark.parametrize("step", sorted(STEPS))
def test_every_step_prints_its_help_with_every_parameter(step, capsys):
    from nscnet.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([step, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for f in C.fields(STEPS[step].config):
        assert f"--{f.name}" in text
