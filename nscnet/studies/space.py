"""Search spaces derived from a model's config dataclass, the grid, and the K binary search.

Pure functions, no Optuna storage and no MLflow. A config field joins the search when its
`param(..., search=...)` metadata is set: a tuple of categorical choices, or "pow2" for K,
meaning the powers of two between `k_min` and `k_max` in the grid and any integer between
them in the refinement. The model config stays the single list of hyperparameters.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from typing import Any

from nscnet.config import ConfigError, fields


@dataclass(frozen=True)
class Dimension:
    """One searched field: its grid values and, for "pow2" fields, the integer range."""

    name: str
    grid: tuple[Any, ...]
    low: int | None = None   # set for integer ("pow2") dimensions: refinement bounds
    high: int | None = None

    @property
    def is_int_range(self) -> bool:
        return self.low is not None


def powers_of_two(k_min: int, k_max: int) -> tuple[int, ...]:
    """Powers of two in [k_min, k_max], e.g. (64, 128, ..., 2048)."""
    values, k = [], 1
    while k <= k_max:
        if k >= k_min:
            values.append(k)
        k *= 2
    if not values:
        raise ConfigError(f"no power of two between k_min={k_min} and k_max={k_max}")
    return tuple(values)


def search_space(config_cls: type, *, k_min: int, k_max: int, only: tuple[str, ...] = ()) -> list[Dimension]:
    """The searched dimensions of a model config class, in field order.

    `only` restricts the search to these field names (others keep their configured value);
    a name that is not searchable is a ConfigError.
    """
    searchable = {f.name: f.metadata.get("search") for f in fields(config_cls) if f.metadata.get("search") is not None}
    unknown = [name for name in only if name not in searchable]
    if unknown:
        raise ConfigError(f"params={','.join(unknown)} not searchable for {config_cls.__name__}; "
                          f"searchable: {', '.join(searchable)}")
    dims = []
    for name, search in searchable.items():
        if only and name not in only:
            continue
        if search == "pow2":
            dims.append(Dimension(name, powers_of_two(k_min, k_max), low=k_min, high=k_max))
        else:
            dims.append(Dimension(name, tuple(search)))
    return dims


def grid(dims: list[Dimension], *, seed: int, k_name: str | None = None) -> list[dict[str, Any]]:
    """Every combination of the dimensions' grid values, in a seeded shuffled order.

    Shuffled so that a budget smaller than the grid still spreads over the whole grid. With
    `k_name`, consecutive points take turns over the settings of the other dimensions (the
    settings that fix a trial's features): workers starting together then compute different
    features side by side instead of one waiting for the other's.

    >>> dims = [Dimension("pca_dim", (128, 256)), Dimension("k", (8, 16, 32))]
    >>> [p["pca_dim"] for p in grid(dims, seed=0, k_name="k")][:4] in ([128, 256, 128, 256], [256, 128, 256, 128])
    True
    """
    points = [dict(zip([d.name for d in dims], values)) for values in itertools.product(*(d.grid for d in dims))]
    random.Random(seed).shuffle(points)
    if k_name is None:
        return points
    groups: dict[str, list[dict[str, Any]]] = {}
    for point in points:
        groups.setdefault(params_key({n: v for n, v in point.items() if n != k_name}), []).append(point)
    turns = itertools.zip_longest(*groups.values())
    return [point for turn in turns for point in turn if point is not None]


def params_key(params: dict[str, Any]) -> str:
    """A canonical text for a parameter set (same params, same key, whatever the order)."""
    return json.dumps({k: params[k] for k in sorted(params)}, default=str)


def next_k(scores: dict[int, float], *, maximize: bool) -> int | None:
    """The next K of the binary search, or None when it is done.

    `scores`: objective per evaluated K of one setting. Bisects between the best K and its
    better evaluated neighbour until they are adjacent integers, then between the best K and
    its other neighbour (objectives such as silhouette are lopsided around their peak, so the
    better neighbour is not always on the peak's side). Done when both neighbours are adjacent.

    >>> next_k({64: 0.2, 128: 0.5, 256: 0.4}, maximize=True)
    192
    """
    if len(scores) < 2:
        return None
    sign = 1.0 if maximize else -1.0
    ks = sorted(scores)
    best = max(ks, key=lambda k: sign * scores[k])
    i = ks.index(best)
    neighbours = sorted((ks[j] for j in (i - 1, i + 1) if 0 <= j < len(ks)), key=lambda k: -sign * scores[k])
    for neighbour in neighbours:
        if abs(neighbour - best) > 1:
            return (best + neighbour) // 2
    return None
