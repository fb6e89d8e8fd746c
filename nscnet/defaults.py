"""Defaults that depend on the data, resolved against it before a step's run opens.

A config field documented as "0 = auto" (or "-1 = auto" where 0 means none: `pca_dim`,
NSCNet's `pretrain_epochs`) gets its value here from N, the number of segments
(and from K when the user gave one); a few others are capped at what N allows. Pure
functions, no MLflow. The convention, the same for every step:

- the run's MLflow **param holds the value used** (`min_cluster_size=3`, not 0), so runs on
  data of different sizes compare in the UI as they ran;
- the tag **`nscnet.auto`** lists every field resolved here with its rule, e.g.
  `k=4 (auto: sqrt(N/2), at most 64; N=30); min_cluster_size=3 (auto: sqrt(N)/2, ...)`; in a
  run started by `mlflow run`, whose params MLflow logged as 0 already (params cannot change),
  this tag is where the resolved values are;
- one line on the console says the same.

The rules (measured on subsets of the Bengalese finch syllables and on synthetic song,
docs/clustering.md "Size-aware defaults"; pca_dim: benchmarks/pca_dim.py; the pretraining
length: benchmarks/features.py --part simclr, docs/RESULTS.md):

| field | auto value |
|---|---|
| `k` | k-means: round(sqrt(N / 2)), between 2 and the step's usual K (64; `pretrain`: 16): the rule of thumb of Mardia et al. (1979), which gives the paper's 64 at its data's size (7,652 syllables). HDBSCAN / OPTICS (NSCNet: `final_algorithm`): stays 0, the algorithm finds the number itself (a k given cuts HDBSCAN's tree to k, `nscnet.clustering.cluster.hdbscan_cut`) |
| `final_algorithm` (NSCNet, `auto`: the `quality` preset) | `kmeans` (at k, in the UMAP space of the embeddings) when k is given, else `hdbscan` (its own number): on learned embeddings k-means at K was at or above HDBSCAN's tree cut to K at every size (docs/RESULTS.md, "Third run") |
| `k_train` (NSCNet, final clustering HDBSCAN / OPTICS, k = 0) | the pseudo-labels' K: round(sqrt(N / 2)), as `k` above |
| `min_cluster_size` (HDBSCAN, OPTICS) | round(sqrt(N) / 2), at least 2 |
| `min_samples` (HDBSCAN, OPTICS) | min_cluster_size (HDBSCAN's own default; OPTICS: at least 2) |
| `umap_neighbors` | round(sqrt(N)), between 2 and UMAP's usual 15 |
| `batch_size` | capped at N |
| `pretrain_epoch_size`, `epoch_size` | capped at N (0 keeps "all") |
| `pca_dim` (-1 = auto: the default of `basenet`) | round(max(sqrt(N), N/16)), between 2 and the step's usual (128; `nscnet`: 256; `pretrain`: 64): 5 at N = 30, 14 at 200, 62 at 1,000, 128 from 2,048 on. A given value (`nscnet`'s default 256, `pretrain`'s 64: not measured on embeddings, kept) is capped at N - 1, and at N/4 when whitened |
| `epochs` of `pretrain` (0 = auto), `pretrain_epochs` of `nscnet` (-1 = auto; the `quality` preset) | 12 N images drawn, between 2,400 and 6,144, in 1..50 epochs of `epoch_size` / `pretrain_epoch_size` images (capped at N): 48 at N = 50, 12 from 200 to 512, 6 at 1,000, 3 of 2,048 from 2,048 on (`pretrain`'s epochs of all 7,652: 1) |
| `ensemble` (`nscnet`, -1 = auto: the `quality` preset) | 3 networks pretrained in the run from seeds seed..seed+2, embedded side by side, while the pretraining passes 12 times over the data (N up to 512), else 1 (1 without in-run pretraining): seeds differ most on small data (nmi_truth spread 0.038 at 50 segments, 0.029 at 500, 0.014 at 750, 0.008 at 1,000), and the ensemble gained +0.019 / +0.011 / +0.029 at 50 / 200 / 500, +0.004 / +0.008 / +0.001 at 750 / 1,000 / 7,652 for 3 times the pretraining (docs/RESULTS.md, "Fifth run") |
| `embed_edge_mask` (`nscnet`, `pretrain`; -1 = auto) | not from N: the `edge_mask` of the network's contrastive training (96 frames at 512, 24 at 128; 0 for a network never trained contrastively) when the dataset's cuts are centred (`preprocess --pad center`), else 0: a cut from the onset keeps the song's start at the left edge. Silencing both ends when embedding raised UMAP + HDBSCAN of the quality preset's embeddings by +0.010 to +0.017 NMI at 50..7,652 syllables (docs/RESULTS.md, "Fourth run") |

The study's K grid (`k_min`..`k_max`, powers of two) is cut to K <= N - 1 (`k_grid_bounds`:
the largest K whose silhouette is defined), so a study on a small data set runs instead of
failing at its first K > N; every K that ran before still runs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from nscnet.config import Contrastive

AUTO_TAG = "nscnet.auto"
DEFAULT_K = 64        # the paper's K, where the data are large enough
UMAP_NEIGHBORS = 15   # UMAP's own default, where the data are large enough
DEFAULT_PCA_DIM = 128  # the paper's PCA components, where the data are large enough (N >= 2,048)
# Whitening more than this share of N components spreads the points evenly (docs/clustering.md,
# Post-processing): whitened PCA keeps at most N/4 components (30 songs of 5 types: 29 whitened
# components left HDBSCAN all noise and k-means at NMI 0.10-0.17).
WHITEN_MAX_SHARE = 0.25
# Contrastive pretraining draws 12 x N images (12 passes over the data), at least
# PRETRAIN_MIN_IMAGES and at most PRETRAIN_IMAGES (3 epochs of 2,048: the `quality` preset on the
# full 7,652 syllables, where 6 and 12 epochs gave no more), in at most PRETRAIN_MAX_EPOCHS
# epochs. The best of the lengths measured with UMAP 10 + HDBSCAN (docs/RESULTS.md): 48 epochs
# at N = 50, 12 at 200 and at 500, 6 at 1,000, 3 of 2,048 at 7,652; 6,144 images at N = 200
# (31 epochs) lost 0.07 NMI to 12 epochs; checked afterwards at N = 350: 12 epochs the best.
PRETRAIN_IMAGES = 6144
PRETRAIN_MIN_IMAGES = 2400
PRETRAIN_PASSES = 12
PRETRAIN_MAX_EPOCHS = 50
ENSEMBLE_NETWORKS = 3  # networks of an auto `ensemble` on small data (`auto_ensemble`)


def auto_k(n: int, usual: int = DEFAULT_K) -> int:
    """round(sqrt(N/2)) clusters, between 2 and `usual` (and never more than N)."""
    return int(min(max(2, round(math.sqrt(n / 2))), usual, max(n, 1)))


def auto_min_cluster_size(n: int) -> int:
    """HDBSCAN's smallest cluster: sqrt(N) / 2, at least 2 (3 at N = 30, 44 at N = 7,652)."""
    return int(max(2, round(math.sqrt(n) / 2)))


def auto_min_samples(min_cluster_size: int) -> int:
    """HDBSCAN's density neighbourhood: min_cluster_size, as HDBSCAN does when it is not given."""
    return int(max(1, min_cluster_size))


def auto_umap_neighbors(n: int) -> int:
    """UMAP n_neighbors: sqrt(N), between 2 and 15 (UMAP's default from N = 225 on)."""
    return int(min(UMAP_NEIGHBORS, max(2, round(math.sqrt(n))), max(n - 1, 2)))


def pca_limit(n: int, whiten: bool) -> int:
    """The most PCA components N segments allow: N - 1 (the rank of centred data), N/4 when whitened."""
    return int(max(1, int(WHITEN_MAX_SHARE * n) if whiten else n - 1))


def auto_pca_dim(n: int, usual: int = DEFAULT_PCA_DIM, whiten: bool = False) -> int:
    """PCA components for N segments: max(sqrt(N), N/16), between 2 and `usual` (the paper's 128
    from N = 2,048 on; 14 at 200, 62 at 1,000), and within `pca_limit`."""
    return int(min(usual, max(2, round(max(math.sqrt(n), n / 16))), pca_limit(n, whiten)))


def pretrain_images(n: int) -> int:
    """Images contrastive pretraining draws on N segments: 12 N, between 2,400 and 6,144."""
    return int(min(PRETRAIN_IMAGES, max(PRETRAIN_MIN_IMAGES, PRETRAIN_PASSES * n)))


def auto_pretrain_epochs(n: int, epoch_size: int) -> int:
    """Contrastive epochs for N segments and `epoch_size` images an epoch (0 = all, capped at N):
    `pretrain_images(N)` images, between 1 and 50 epochs (48 at N = 50, 12 from 200 to 512, 6 at
    1,000, 3 of 2,048 images from N = 2,048 on; 1 epoch of all 7,652)."""
    per_epoch = max(1, min(epoch_size or n, n))
    return int(min(PRETRAIN_MAX_EPOCHS, max(1, round(pretrain_images(n) / per_epoch))))


def auto_ensemble(n: int) -> int:
    """Networks of NSCNet's `ensemble` (-1 = auto) on N segments: ENSEMBLE_NETWORKS while contrastive
    pretraining passes over the data PRETRAIN_PASSES times (N up to PRETRAIN_IMAGES / PRETRAIN_PASSES
    = 512), else 1. There the networks of different seeds differ most (nmi_truth spread over seeds
    of the same draw: 0.038 at 50 segments, 0.018 at 200, 0.029 at 500, against 0.014 at 750 and
    0.008 at 1,000 and 7,652), and the ensemble of 3 gained +0.019, +0.011 and +0.029 (+0.004,
    +0.008 and +0.001 at 750, 1,000 and 7,652, at 3 times the pretraining; docs/RESULTS.md, "Fifth
    run")."""
    return ENSEMBLE_NETWORKS if PRETRAIN_PASSES * n <= PRETRAIN_IMAGES else 1


def auto_embed_edge_mask(trained_edge_mask: int, pad: str | None) -> int:
    """Frames (at 512) silenced at each end of an image when it is embedded: the edge mask the
    network was trained to ignore (`trained_edge_mask`, its contrastive `edge_mask`; 0 when it was
    never trained contrastively) when the dataset's cuts are centred (`pad` "center"), else 0."""
    return int(max(0, trained_edge_mask)) if pad == "center" else 0


def resolve_embed_edge_mask(cfg: Any, pad: str | None, trained_edge_mask: int,
                            tags: dict[str, str] | None = None) -> tuple[Any, dict[str, str]]:
    """`cfg` with `embed_edge_mask` -1 (auto) resolved by `auto_embed_edge_mask`, and `tags` with
    the rule appended to `nscnet.auto` (and said on the console); a value given stays."""
    import logging

    tags = dict(tags or {})
    if cfg.embed_edge_mask != -1:
        return cfg, tags
    value = auto_embed_edge_mask(trained_edge_mask, pad)
    why = (f"the network's contrastive edge_mask {trained_edge_mask}, cuts centred" if value else
           "no contrastive edge_mask in the network's training" if pad == "center" else
           f"cuts not centred (pad {pad or 'unknown'})")
    note = f"embed_edge_mask={value} (auto: {why})"
    tags[AUTO_TAG] = f"{tags[AUTO_TAG]}; {note}" if tags.get(AUTO_TAG) else note
    logging.getLogger("nscnet.defaults").info("defaults: %s", note)
    return dataclasses.replace(cfg, embed_edge_mask=value), tags


def k_limit(n: int) -> int:
    """The largest K a study's grid tries on N segments: N - 1, the largest K whose silhouette
    is defined (at least 2)."""
    return max(2, n - 1)


def k_grid_bounds(k_min: int, k_max: int, n: int | None) -> tuple[int, int, str | None]:
    """(k_min, k_max) cut to what N segments allow, and a one-line notice when they were cut.

    The grid keeps its powers of two up to K = N - 1; when even k_min is above that, the grid
    starts at 2 instead.

    >>> k_grid_bounds(64, 2048, 7652)[:2]
    (64, 2048)
    >>> k_grid_bounds(64, 2048, 1303)[:2]
    (64, 1302)
    >>> k_grid_bounds(64, 2048, 30)[:2]
    (2, 29)
    """
    if n is None:
        return k_min, k_max, None
    limit = k_limit(n)
    if k_max <= limit:
        return k_min, k_max, None
    new_min = k_min if k_min <= limit else 2
    notice = (f"K grid cut to {new_min}..{limit} (was {k_min}..{k_max}): the data hold {n} segments, "
              f"and K stays at most N - 1 = {limit}")
    return new_min, limit, notice


def _has(cfg: Any, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cfg))


def resolve(cfg: Any, n: int) -> tuple[Any, dict[str, str]]:
    """(`cfg` with its auto fields resolved against N segments, {field: "value (rule)"}).

    Works on any config dataclass: only the fields it has are looked at. Fields the user set
    are kept, except the caps (batch sizes, epoch sizes), which say so in the notes.
    """
    changes: dict[str, Any] = {}
    notes: dict[str, str] = {}
    algorithm = getattr(cfg, "algorithm", "kmeans")
    final = getattr(cfg, "final_algorithm", "kmeans")
    if final == "auto":  # measured on learned embeddings: k-means at k above the tree cut to k (docs/RESULTS.md)
        final = changes["final_algorithm"] = "kmeans" if getattr(cfg, "k", 0) > 0 else "hdbscan"
        notes["final_algorithm"] = (f"{final} (auto: " + ("k-means at the k given)" if final == "kmeans" else
                                                         "no k given, HDBSCAN finds the number of clusters)"))
    density = algorithm != "kmeans" or final != "kmeans"
    # the algorithm that gives the run's clusters: NSCNet's final clustering, else `algorithm`
    last = final if _has(cfg, "final_algorithm") else algorithm
    if _has(cfg, "k") and cfg.k == 0:
        usual = getattr(type(cfg), "_auto_k_usual", DEFAULT_K)
        if last == "kmeans":
            changes["k"] = auto_k(n, usual)
            notes["k"] = f"{changes['k']} (auto: sqrt(N/2), at most {usual}; N={n})"
        else:  # k stays 0: the density clustering finds the number of clusters itself
            notes["k"] = (f"0 (auto: {last} finds the number of clusters itself"
                          + (", excess of mass over its condensed tree" if last == "hdbscan" else "") + ")")
            if _has(cfg, "k_train") and cfg.k_train == 0:  # NSCNet's pseudo-labels still need a K
                changes["k_train"] = auto_k(n, usual)
                notes["k_train"] = f"{changes['k_train']} (auto: sqrt(N/2), at most {usual}; N={n})"
    mcs = cfg.min_cluster_size if _has(cfg, "min_cluster_size") else 0
    if _has(cfg, "min_cluster_size") and mcs == 0:
        mcs = changes["min_cluster_size"] = auto_min_cluster_size(n)
        if density:
            notes["min_cluster_size"] = f"{mcs} (auto: sqrt(N)/2, at least 2; N={n})"
    if _has(cfg, "min_samples") and cfg.min_samples == 0:
        value = auto_min_samples(mcs or auto_min_cluster_size(n))
        if algorithm == "optics":
            value = max(2, value)
        changes["min_samples"] = value
        if density:
            notes["min_samples"] = f"{value} (auto: = min_cluster_size)"
    uses_umap = getattr(cfg, "reducer", "pca") == "umap" or getattr(cfg, "final_reducer", "pca") == "umap"
    if _has(cfg, "umap_neighbors") and cfg.umap_neighbors == 0:
        changes["umap_neighbors"] = auto_umap_neighbors(n)
        if uses_umap:
            notes["umap_neighbors"] = f"{changes['umap_neighbors']} (auto: sqrt(N), 2..15; N={n})"
    if _has(cfg, "batch_size") and cfg.batch_size > n >= 2:
        changes["batch_size"] = n
        notes["batch_size"] = f"{n} (capped at N; asked {cfg.batch_size})"
    for name in ("pretrain_epoch_size", "epoch_size"):
        if _has(cfg, name) and getattr(cfg, name) > n:
            changes[name] = n
            if name != "pretrain_epoch_size" or getattr(cfg, "pretrain_epochs", 0):
                notes[name] = f"{n} (capped at N; asked {getattr(cfg, name)})"
    if _has(cfg, "pca_dim"):
        whiten = bool(getattr(cfg, "whiten", False))
        limit = pca_limit(n, whiten)
        if cfg.pca_dim < 0:
            usual = getattr(type(cfg), "_auto_pca_usual", DEFAULT_PCA_DIM)
            changes["pca_dim"] = auto_pca_dim(n, usual, whiten)
            notes["pca_dim"] = f"{changes['pca_dim']} (auto: max(sqrt(N), N/16), 2..{usual}; N={n})"
        elif cfg.pca_dim > limit:
            changes["pca_dim"] = limit
            notes["pca_dim"] = (f"{limit} (capped at {'N/4, whitened' if whiten else 'N - 1'}; "
                                f"asked {cfg.pca_dim})")
    # the contrastive epochs: `pretrain`'s epochs (0 = auto), NSCNet's in-run pretrain_epochs (-1 = auto)
    for name, size_name, auto in (("pretrain_epochs", "pretrain_epoch_size", -1), ("epochs", "epoch_size", 0)):
        if name == "epochs" and not isinstance(cfg, Contrastive):  # only `pretrain`'s epochs are contrastive
            continue
        if _has(cfg, name) and getattr(cfg, name) == auto:
            epoch_size = changes.get(size_name, getattr(cfg, size_name))
            changes[name] = auto_pretrain_epochs(n, epoch_size)
            notes[name] = (f"{changes[name]} (auto: 12N images, {PRETRAIN_MIN_IMAGES:,}..{PRETRAIN_IMAGES:,}, "
                           f"1..{PRETRAIN_MAX_EPOCHS} epochs of {min(epoch_size or n, n)}; N={n})")
    if _has(cfg, "ensemble") and cfg.ensemble == -1:  # NSCNet: networks pretrained in the run, side by side
        pretrained_here = bool(cfg.pretrain_epochs) and not (cfg.pretrained_run or cfg.pretrained_weights)
        changes["ensemble"] = auto_ensemble(n) if pretrained_here else 1
        notes["ensemble"] = (f"{changes['ensemble']} (auto: {ENSEMBLE_NETWORKS} networks while pretraining passes "
                             f"{PRETRAIN_PASSES} times over the data, N <= {PRETRAIN_IMAGES // PRETRAIN_PASSES}, "
                             f"else 1; N={n})" if pretrained_here else "1 (auto: no pretraining in this run)")
    if not changes:
        return cfg, notes
    return dataclasses.replace(cfg, **changes), notes


def auto_text(notes: dict[str, str]) -> str:
    """The `nscnet.auto` tag text: "k=4 (auto: ...); min_cluster_size=2 (...)"."""
    return "; ".join(f"{name}={text}" for name, text in notes.items())


def for_data(cfg: Any, n: int, tags: dict[str, str] | None = None) -> tuple[Any, dict[str, str]]:
    """`resolve` for a runner: (resolved cfg, run tags with `nscnet.auto` added), and the one
    console line that says what was resolved."""
    import logging

    cfg, notes = resolve(cfg, n)
    tags = dict(tags or {})
    if notes:
        tags[AUTO_TAG] = auto_text(notes)
        logging.getLogger("nscnet.defaults").info("defaults for %d segments: %s", n, tags[AUTO_TAG])
    return cfg, tags
