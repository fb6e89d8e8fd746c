"""The models: one module per model (`nscnet/models/<name>.py`) with its `run_<name>(cfg)` runner.

Models are steps: they are registered once, with their capabilities, in `nscnet.steps.STEPS`;
`get("name")` is a shortcut to a model step's runner (imported on first use, so studies and the
CLI do not import torch for BASENet).
"""

from __future__ import annotations

from typing import Any, Callable

from nscnet.config import ConfigError

KNOWN = ("basenet", "vaenet", "nscnet")  # the models studies tune (StudyConfig.model)


def get(name: str) -> Callable[..., Any]:
    """The runner of the model step `name`; ConfigError naming the known ones otherwise."""
    from nscnet.steps import STEPS

    if name not in KNOWN:
        raise ConfigError(f"model={name!r} is not registered; known: {', '.join(KNOWN)}")
    return STEPS[name].load()


def names() -> list[str]:
    """Names of the models."""
    return sorted(KNOWN)
