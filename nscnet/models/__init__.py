"""The model registry: `@register("name")` on a model's runner, `get("name")` to find it.

Each model lives in its own module `nscnet/models/<name>.py` and registers its
`run_<name>(cfg, ...) -> dict` runner; `get` imports that module on first use, so studies and
the CLI look models up by name without an if/else chain and without importing torch for BASENet.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from nscnet.config import ConfigError

_MODELS: dict[str, Callable[..., Any]] = {}
KNOWN = ("basenet", "vaenet", "nscnet")


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a model runner under `name` (returns the runner unchanged)."""
    def decorate(runner: Callable[..., Any]) -> Callable[..., Any]:
        _MODELS[name] = runner
        return runner
    return decorate


def get(name: str) -> Callable[..., Any]:
    """The runner registered as `name`, importing `nscnet.models.<name>` when needed."""
    if name not in _MODELS:
        try:
            importlib.import_module(f"nscnet.models.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"nscnet.models.{name}":
                raise
    if name not in _MODELS:
        raise ConfigError(f"model={name!r} is not registered; known: {', '.join(sorted(set(_MODELS) | set(KNOWN)))}")
    return _MODELS[name]


def names() -> list[str]:
    """Names of the registered models (importing the known ones first)."""
    for name in KNOWN:
        try:
            get(name)
        except ConfigError:
            pass
    return sorted(_MODELS)
