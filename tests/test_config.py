"""The config dataclasses drive the CLI and MLproject; MLproject never drifts from them."""

from __future__ import annotations

import pytest
import yaml

from nscnet import config as C
from nscnet.cli import config_from_args
from nscnet.mlproject import render
from nscnet.steps import STEPS
from tests.conftest import ROOT


def test_mlproject_file_is_generated_from_the_dataclasses():
    assert (ROOT / "MLproject").read_text() == render(), "run `make mlproject` to regenerate MLproject"


def test_mlproject_defaults_equal_dataclass_defaults():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    assert set(project["entry_points"]) == set(STEPS)
    for name, step in STEPS.items():
        declared = project["entry_points"][name]["parameters"]
        # the default of every parameter, parsed as the CLI parses it, equals the dataclass default
        cfg = config_from_args(name, [f"--{k}={v['default']}" for k, v in declared.items()])
        assert cfg == step.config(), name
        assert set(declared) == {f.name for f in C.fields(step.config)}


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
        (C.NscnetConfig, {"k_values": (4, -1)}, "k_values"),
    ],
)
def test_bad_values_raise_config_error_naming_the_value(cls, changes, word):
    with pytest.raises(C.ConfigError, match=word):
        cls(**changes)


def test_params_flatten_tuples():
    params = C.to_params(C.BasenetConfig(k_values=(64, 128)))
    assert params["k_values"] == "64,128" and params["pca_dim"] == 128


@pytest.mark.parametrize("step", sorted(STEPS))
def test_every_step_prints_its_help_with_every_parameter(step, capsys):
    from nscnet.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([step, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for f in C.fields(STEPS[step].config):
        assert f"--{f.name}" in text
