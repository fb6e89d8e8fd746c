"""Clustering quality on real song: baselines vs deep configurations, and label-free selection.

Runs chosen configurations on the Bengalese finch syllables (../shared/data/bengalese-finch,
9 expert labels, read for scoring only), each under several seeds, every run logged to MLflow
as usual. Prints one table row per configuration:

    configuration, seeds, nmi_truth mean and spread (std), ari_truth, silhouette, stability
    (the resample stability logged by every clustering), mean n_clusters, minutes of CPU per run,

then, over all runs, the Spearman rank correlation of each label-free criterion (silhouette,
-davies_bouldin, calinski_harabasz, stability) with nmi_truth.

Rows finished so far are kept in <work>/quality_rows.json; a second call reuses them (delete
the file, or pass --fresh, to measure again).

    PYTHONPATH=$PWD python benchmarks/quality.py --work /tmp/nscnet-quality --seeds 0,1,2

Issue 13, recipes across sizes (`--sizes`, `SIZE_RECIPES`; rows in <work>/size_rows.json): the
pixel recipes on seeded draws of the syllables and on synthetic sets, with the same settings
everywhere, then how well each label-free criterion picks the best recipe per draw;
`--deep-sizes` adds the quality preset (one NSCNet run per draw) to the same rows:

    PYTHONPATH=$PWD python benchmarks/quality.py --work /tmp/q13 --sizes 50,200,1000,0 --draws 3 \
        --synth 60:5:20,300:8:10,300:12:0
    PYTHONPATH=$PWD python benchmarks/quality.py --work /tmp/q13 --deep-sizes 50,200,1000 --deep-draws 2

It prints issue 13's target per size: the preset's mean against the best baseline's, and its
difference from PCA + k-means at K paired by draw. More draws on top of earlier ones, or split
over parallel jobs: `--first-draw F` (draws F, F + 1, ...) in another work folder, then
`--merge` its size_rows.json into the table:

    PYTHONPATH=$PWD python benchmarks/quality.py --work /tmp/q13b --sizes 50 --first-draw 6 --draws 10 \
        --deep-sizes 50 --deep-draws 10
    PYTHONPATH=$PWD python benchmarks/quality.py --work /tmp/q13 --sizes 50 --draws 6 --merge /tmp/q13b/size_rows.json

`--features birdnet` runs the same recipes on the same draws with BirdNET v2.4 embeddings of each
syllable's audio in place of the pixels (`nscnet.features.birdnet`, the optional extra
`nscnet[birdnet]`; model weights CC BY-NC-SA 4.0, non-commercial); the embeddings of all
syllables are computed once into <work>/birdnet.npy, with their CPU seconds in birdnet.json
(`birdnet-zeropad`: each segment zero-padded to its image's span, as its image is, instead of
the recording around it):

    PYTHONPATH=$PWD python benchmarks/quality.py --work /tmp/q13 --sizes 200,1000,0 --draws 3 --features birdnet
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/numba-cache")
os.environ.setdefault("NSCNET_PROGRESS", "0")
os.environ.setdefault("NSCNET_FIGURE_PNG", "0")

from nscnet import presets  # noqa: E402
from nscnet.clustering.evaluate import score  # noqa: E402
from nscnet.clustering.final import final_clustering  # noqa: E402
from nscnet.clustering.selection import rank_correlations, resample_stability  # noqa: E402
from nscnet.config import BasenetConfig, NscnetConfig, PreprocessConfig, PretrainConfig  # noqa: E402
from nscnet.images.dataset import read_dataset  # noqa: E402
from nscnet.runs import tracking

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "bengalese-finch"
CRITERIA = ("silhouette", "davies_bouldin", "calinski_harabasz", "stability")
K = 9  # default; --k 16 for the other K of issue 8 (rows carry their k)
COMMON = dict(truth=True, export=False, experiment="quality")
DEEP = dict(device="cpu", threads=1, num_workers=0)
PRETRAIN_NAME = "pretrain small_cnn 3ep"
NSCNET_PRETRAINED = "nscnet small_cnn 1ep pretrained +warm+reseed +umap10+kmeans"
PRESET_QUALITY = "nscnet --preset quality (in-run pretrain 3ep edge masks, 0 DeepCluster epochs, umap10+hdbscan)"
# edge_mask=0: the pretrain rows were measured before edge masks existed (the preset row uses the default, 96)
PRETRAIN = dict(backbone="small_cnn", embedding_dim=128, epochs=3, epoch_size=2048, pca_dim=64, edge_mask=0)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dataset(work: Path) -> Path:
    """The syllable images (64 x 128, 0.13 s centred, high-pass 500 Hz, n_fft 512), cached in work."""
    from nscnet.images.preprocess import run_preprocess

    out = work / "bf013"
    run_preprocess(PreprocessConfig(audio=str(DATA / "recordings"), labels=str(DATA / "syllables"), out=str(out),
                                    duration_s=0.13, pad="center", highpass_hz=500, n_fft=512, n_mels=64,
                                    frames=128, experiment="quality"))
    return out


def embeddings_of(run_id: str) -> np.ndarray:
    return np.load(tracking.download_artifact(run_id, "embeddings.npy"))


def rescore(features: np.ndarray, truth: np.ndarray, seed: int, k: int, **levers) -> dict:
    """Final clustering of learned embeddings (levers.final_clustering) with its scores."""
    cfg = NscnetConfig(seed=seed, truth=True, k=k, **{**dict(pca_dim=64, whiten=False, l2=True), **levers})
    processed, result, params = final_clustering(features, cfg)
    metrics = score(processed, result, params, truth)
    metrics["stability"] = resample_stability(processed, params, 3, reference=result.labels)
    return metrics


def configurations(data: str, truth: np.ndarray, cache: dict, k: int = K):
    """name -> function(seed) -> metrics of one run at k clusters."""
    from nscnet.models.basenet import run_basenet
    from nscnet.models.nscnet import run_nscnet
    from nscnet.models.pretrain import run_pretrain

    def basenet(**kw):
        def run(seed):
            return run_basenet(BasenetConfig(data=data, seed=seed, k=k, **COMMON, **kw))
        return run

    def pretrained(seed):
        key = f"pretrain-{seed}"
        for row in cache.get("live", []) + cache.get("rows", []):  # a pretrain run of this or an earlier call
            if row["configuration"].startswith(PRETRAIN_NAME) and row["seed"] == seed and key not in cache:
                cache[key] = {"run_id": row["run_id"]}
        if key not in cache:
            m = run_pretrain(PretrainConfig(data=data, seed=seed, k=k, **{**COMMON, "export": True}, **PRETRAIN,
                                             **DEEP))
            cache[key] = m
        return cache[key]

    def pretrain_then(**levers):
        def run(seed):
            m = pretrained(seed)
            return rescore(embeddings_of(m["run_id"]), truth, seed, k, **levers) | {"run_id": m["run_id"]}
        return run

    def nscnet(pretrain: bool, **kw):
        def run(seed):
            extra = {"pretrained_run": pretrained(seed)["run_id"]} if pretrain else {}
            return run_nscnet(NscnetConfig(data=data, seed=seed, k=k, **{**COMMON, "export": True}, **DEEP, **extra,
                                           **kw))
        return run

    def nscnet_then(name, **levers):
        def run(seed):
            match = [r for r in cache.get("live", []) + cache.get("rows", [])
                     if r["configuration"] == name and r["seed"] == seed and r.get("k", K) == k]
            if not match:
                raise SystemExit(f"run {name!r} seed {seed} first")
            run_id = match[0]["run_id"]
            return rescore(embeddings_of(run_id), truth, seed, k, **levers) | {"run_id": run_id}
        return run

    small = dict(backbone="small_cnn", embedding_dim=128, lr=1e-3, pca_dim=64, batch_size=64, epochs=1)
    return {
        "basenet pca64+kmeans (plain)": basenet(pca_dim=64, whiten=False, l2=False),
        "basenet pca64+whiten+l2+kmeans (paper)": basenet(pca_dim=64),
        "basenet umap10+hdbscan (Sainburg)": basenet(reducer="umap", algorithm="hdbscan", pca_dim=64, whiten=False,
                                                     l2=False, min_cluster_size=50, min_samples=10),
        PRETRAIN_NAME + " + pca64+kmeans": pretrain_then(),
        "pretrain small_cnn 3ep + umap10+kmeans": pretrain_then(final_reducer="umap"),
        "pretrain small_cnn 3ep + umap10+hdbscan": pretrain_then(final_reducer="umap", final_algorithm="hdbscan",
                                                                 min_cluster_size=50, min_samples=10),
        "nscnet small_cnn 1ep scratch (paper levers)": nscnet(False, **small),
        NSCNET_PRETRAINED: nscnet(
            True, kmeans_warm_start=True, reseed_empty=True, final_reducer="umap", **small),
        PRESET_QUALITY: lambda seed: run_nscnet(presets.config("nscnet", "quality", data=data, seed=seed, k=k,
                                                               **{**COMMON, "export": True}, **DEEP)),
        NSCNET_PRETRAINED + " -> umap10+hdbscan": nscnet_then(NSCNET_PRETRAINED, final_reducer="umap",
                                                              final_algorithm="hdbscan", min_cluster_size=50,
                                                              min_samples=10),
    }


# ---------------------------------------------------------------- issue 13: recipes across sizes

# recipe -> (reducer, k given?, algorithm, assign_noise); same settings on every set, the
# size-aware defaults of nscnet.defaults (min_cluster_size, min_samples, umap_neighbors from N)
SIZE_RECIPES = {
    "pca64+kmeans at K (baseline)": ("pca", True, "kmeans", False),
    "umap10+hdbscan own number (baseline)": ("umap", False, "hdbscan", False),
    "umap10+kmeans at K": ("umap", True, "kmeans", False),
    "umap10+hdbscan cut to K": ("umap", True, "hdbscan", False),
    "umap10+hdbscan cut to K +assign_noise": ("umap", True, "hdbscan", True),
    "umap10+hdbscan own number +assign_noise": ("umap", False, "hdbscan", True),
}
SIZE_CRITERIA = ("silhouette", "silhouette_pca", "davies_bouldin", "stability")


def birdnet_matrix(data: Path, work: Path, *, context: bool = True) -> np.ndarray:
    """BirdNET embeddings (N, 1024) of every segment of `data`, cached in work (CPU s in the .json);
    context=False: each segment zero-padded to its image's span instead of the recording around it."""
    from nscnet.features.birdnet import embed_dataset

    name = "birdnet" if context else "birdnet-zeropad"
    cache, meta = work / f"{name}.npy", work / f"{name}.json"
    if not cache.exists():
        dataset = read_dataset(data)
        cpu, started = cpu_seconds(), time.perf_counter()
        features = embed_dataset(dataset, threads=1, context=context)
        spent = cpu_seconds() - cpu
        np.save(cache, features)
        meta.write_text(json.dumps({"segments": len(dataset), "cpu_seconds": spent,
                                    "wall_seconds": time.perf_counter() - started,
                                    "cpu_seconds_per_segment": spent / len(dataset)}))
    print(f"[quality] birdnet embeddings: {json.loads(meta.read_text())}", flush=True)
    return np.load(cache)


def size_rows(data: str, subset: np.ndarray | None, truth: np.ndarray, k_true: int, seed: int,
              set_name: str, matrix: np.ndarray | None = None) -> list[dict]:
    """Every SIZE_RECIPES recipe on one draw (segments `subset` of `data`, None = all), through
    the library's own steps (postprocess, umap_fit, fit_clusters, score, resample_stability).
    Features shared between recipes (pixel PCA 64, its UMAP 10) are computed once; each row's
    CPU minutes are its own clustering plus the features it needs. matrix: the features (N, D) of
    every segment of data in place of its flattened images (e.g. BirdNET embeddings)."""
    from nscnet.clustering.cluster import fit_clusters, internal_metrics
    from nscnet.images.dataset import read_dataset as read
    from nscnet.defaults import resolve
    from nscnet.features.postprocess import postprocess
    from nscnet.features.reduction import umap_fit

    flat = read(data).flat() if matrix is None else matrix
    x = flat if subset is None else flat[subset]
    n = len(x)
    base = resolve(BasenetConfig(data=data, seed=seed, k=k_true, pca_dim=64, whiten=False, l2=False), n)[0]
    cpu = cpu_seconds()
    pca, _ = postprocess(x, base)
    pca_cpu = cpu_seconds() - cpu
    cpu = cpu_seconds()
    umap, _ = umap_fit(pca, base)
    umap_cpu = cpu_seconds() - cpu
    rows = []
    for name, (reducer, given, algorithm, assign) in SIZE_RECIPES.items():
        cpu = cpu_seconds()
        params = resolve(BasenetConfig(data=data, seed=seed, k=k_true if given else 0, algorithm=algorithm,
                                       assign_noise=assign, reducer=reducer, pca_dim=64, whiten=False, l2=False), n)[0]
        space = pca if reducer == "pca" else umap
        result = fit_clusters(space, params)
        metrics = score(space, result, params, truth)
        metrics["stability"] = resample_stability(space, params, 3, reference=result.labels)
        metrics["silhouette_pca"] = internal_metrics(pca, result.labels, seed=seed)["silhouette"]
        spent = cpu_seconds() - cpu + pca_cpu + (umap_cpu if reducer == "umap" else 0)
        rows.append({"set": set_name, "n": n, "k": k_true, "seed": seed, "configuration": name,
                     **{key: metrics.get(key) for key in ("nmi_truth", "ari_truth", "n_clusters", "noise_fraction")
                        + SIZE_CRITERIA}, "cpu_minutes": spent / 60})
        print(f"[quality] {set_name} n {n} seed {seed} {name}: nmi_truth={metrics['nmi_truth']:.3f} "
              f"n_clusters={metrics['n_clusters']}", flush=True)
    return rows


DEEP_RECIPE = "nscnet --preset quality, no k (HDBSCAN's own number)"


def subset_dataset(data: Path, subset: np.ndarray, out: Path) -> Path:
    """A dataset folder of the segments `subset` of `data` (images and segment rows, renumbered;
    the source's preprocessing params, so the run knows how the cuts were made)."""
    import pandas as pd

    from nscnet.images.dataset import IMAGES, META, SEGMENTS, open_image_writer

    source = read_dataset(data)
    meta = {"subset_of": str(data), "segments": len(subset), "params": source.meta.get("params", {})}
    if (out / META).exists():
        if "params" not in json.loads((out / META).read_text()):  # made before the params were copied
            (out / META).write_text(json.dumps(meta))
        return out
    out.mkdir(parents=True, exist_ok=True)
    images = open_image_writer(out / IMAGES, len(subset), *source.image_shape)
    images[:] = source.images[subset]
    images.flush()
    del images
    rows = source.segments.iloc[subset].copy()
    rows["row"] = np.arange(len(subset))
    pd.DataFrame(rows).to_csv(out / SEGMENTS, index=False)
    (out / META).write_text(json.dumps(meta))
    return out


def deep_rows(data: Path, work: Path, size: int, draw: int) -> dict:
    """The quality preset (one NSCNet run, MLflow store in work) on a seeded draw, k not given."""
    from nscnet.models.nscnet import run_nscnet

    labels = read_dataset(data).truth()
    subset = np.sort(np.random.default_rng(draw).choice(len(labels), size, replace=False)) if size else None
    folder = data if subset is None else subset_dataset(data, subset, work / f"bf-{size}-{draw}")
    cpu = cpu_seconds()
    metrics = run_nscnet(presets.config("nscnet", "quality", data=str(folder), seed=draw, figures=False,
                                        **{**COMMON, "export": False}, **DEEP))
    return {"set": "bengalese finch", "n": len(labels) if subset is None else size, "k": 0, "seed": draw,
            "configuration": DEEP_RECIPE, **{key: metrics.get(key) for key in
                                             ("nmi_truth", "ari_truth", "n_clusters", "noise_fraction") + SIZE_CRITERIA},
            "cpu_minutes": (cpu_seconds() - cpu) / 60}


def synth_sets(work: Path, specs: list[str]) -> list[tuple[str, Path]]:
    """Synthetic song sets `songs:types:snr_db` (nscnet synth + preprocess, 64 x 64 images, 3 s)."""
    from nscnet.audio.synth import write_synthetic
    from nscnet.config import SynthConfig
    from nscnet.images.preprocess import preprocess

    out = []
    for spec in specs:
        songs, types, snr = spec.split(":")
        name = f"synth {songs} songs {types} types {snr} dB"
        folder = work / f"synth-{songs}-{types}-{snr}"
        if not (folder / "dataset" / "preprocess.json").exists():
            write_synthetic(SynthConfig(out=str(folder / "audio"), songs=int(songs), types=int(types),
                                        snr_db=float(snr), recordings=2, seed=0))
            preprocess(PreprocessConfig(audio=str(folder / "audio"), out=str(folder / "dataset"), duration_s=3.0,
                                        n_mels=64, frames=64))
        out.append((name, folder / "dataset"))
    return out


def sizes_main(args, work: Path) -> None:
    """--sizes: SIZE_RECIPES on seeded draws of the syllables and on synthetic sets, one table."""
    rows_file = Path(args.rows) if args.rows else work / "size_rows.json"
    rows = [] if args.fresh or not rows_file.exists() else json.loads(rows_file.read_text())
    done = {(r["set"], r["n"], r["seed"]) for r in rows}
    data = Path(args.data) if args.data else dataset(work)
    labels = read_dataset(data).truth()
    k_true = len(np.unique(labels))
    matrix, set_name = None, "bengalese finch"
    if args.features == "birdnet":
        matrix, set_name = birdnet_matrix(data, work), "bengalese finch, birdnet"
    elif args.features == "birdnet-zeropad":
        matrix, set_name = birdnet_matrix(data, work, context=False), "bengalese finch, birdnet zero-padded"
    for size in [int(s) for s in args.sizes.split(",") if s]:
        draws = [0] if size == 0 or size >= len(labels) else range(args.first_draw, args.first_draw + args.draws)
        for draw in draws:
            n = len(labels) if size == 0 else min(size, len(labels))
            if (set_name, n, draw) in done:
                continue
            subset = None if n == len(labels) else np.sort(np.random.default_rng(draw).choice(len(labels), n, replace=False))
            truth = labels if subset is None else labels[subset]
            rows += size_rows(str(data), subset, truth, len(np.unique(truth)), draw, set_name, matrix)
            rows_file.write_text(json.dumps(rows, indent=1, default=float))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    for size in [int(s) for s in args.deep_sizes.split(",") if s]:  # the deep preset, one NSCNet run a draw
        draws = range(args.deep_full_seeds) if size == 0 else range(args.first_draw, args.first_draw + args.deep_draws)
        for draw in draws:  # all N: draw = the seed
            n = len(labels) if size == 0 else size
            if any((r["set"], r["n"], r["seed"], r["configuration"]) == ("bengalese finch", n, draw, DEEP_RECIPE)
                   for r in rows):
                continue
            rows.append(deep_rows(data, work, size, draw))
            print(f"[quality] deep n {n} seed {draw}: nmi_truth={rows[-1]['nmi_truth']:.3f}", flush=True)
            rows_file.write_text(json.dumps(rows, indent=1, default=float))
    for name, folder in synth_sets(work, [s for s in args.synth.split(",") if s]):
        truth = read_dataset(folder).truth()
        if (name, len(truth), 0) not in done:
            rows += size_rows(str(folder), None, truth, len(np.unique(truth)), 0, name)
            rows_file.write_text(json.dumps(rows, indent=1, default=float))
    for other in filter(None, args.merge.split(",")):  # rows of other calls (e.g. draws run in parallel)
        rows += [r for r in json.loads(Path(other).read_text()) if r not in rows]
    print_size_table(rows)


def print_margins(rows: list[dict], groups: list[tuple[str, int]]) -> None:
    """Issue 13's target per set and size: the deep preset's mean nmi_truth against the best
    baseline's mean [target >= +0.03], and, paired by draw, against PCA + k-means at K
    [never below]: mean difference ± its standard error, and on how many draws it is above."""
    baselines = [name for name in SIZE_RECIPES if name.endswith("(baseline)")]
    for set_name, n in groups:
        def by_draw(name):
            return {r["seed"]: r["nmi_truth"] for r in rows
                    if (r["set"], r["n"], r["configuration"]) == (set_name, n, name)}
        deep = by_draw(DEEP_RECIPE)
        base = {name: by_draw(name) for name in baselines}
        draws = sorted(set(deep).intersection(*base.values()))
        if not draws:
            continue
        preset = np.array([deep[d] for d in draws])
        best_name = max(baselines, key=lambda name: np.mean([base[name][d] for d in draws]))
        best = np.mean([base[best_name][d] for d in draws])
        def paired(name):
            gap = preset - np.array([base[name][d] for d in draws])
            se = gap.std(ddof=1) / np.sqrt(len(draws)) if len(draws) > 1 else float("nan")
            return f"{gap.mean():+.3f} ± {se:.3f} (se), above on {int((gap > 0).sum())} of {len(draws)} draws"
        print(f"  {set_name}, N {n}, {len(draws)} draws: preset {preset.mean():.3f} against the best baseline "
              f"({best_name}) {best:.3f}: {preset.mean() - best:+.3f}  [target >= +0.03]; paired by draw: "
              f"{paired(best_name)}; against {baselines[0]}: {paired(baselines[0])}  [never below]")


def print_size_table(rows: list[dict]) -> None:
    """nmi_truth mean ± std per set, size and recipe; then, per set and size, how often each
    label-free criterion picks the recipe of the best nmi_truth, and its rank correlation."""
    groups = list(dict.fromkeys((r["set"], r["n"]) for r in rows))
    names = list(dict.fromkeys(r["configuration"] for r in rows))
    print("\n| set | N | draws | " + " | ".join(names) + " |\n|" + "---|" * (3 + len(names)))
    for set_name, n in groups:
        cells = []
        for name in names:
            nmi = np.array([r["nmi_truth"] for r in rows if (r["set"], r["n"], r["configuration"]) == (set_name, n, name)])
            cells.append(f"{nmi.mean():.3f} ± {nmi.std():.3f}" if len(nmi) else "-")
        draws = len({r["seed"] for r in rows if (r["set"], r["n"]) == (set_name, n)})
        print(f"| {set_name} | {n} | {draws} | " + " | ".join(cells) + " |")
    print_margins(rows, groups)
    print("\nCPU minutes per run (mean over every set):")
    for name in names:
        print(f"  {name:42s} {np.mean([r['cpu_minutes'] for r in rows if r['configuration'] == name]):.3f}")
    print("\nlabel-free choice between recipes, per draw: criterion picks the best-nmi recipe (hits / draws), "
          "mean Spearman with nmi_truth, mean nmi_truth lost by its pick")
    draws = list(dict.fromkeys((r["set"], r["n"], r["seed"]) for r in rows))
    for criterion in SIZE_CRITERIA:
        hits, lost, rhos = 0, [], []
        for key in draws:
            group = [r for r in rows if (r["set"], r["n"], r["seed"]) == key]
            rho = rank_correlations(group, [criterion])[criterion]
            if rho is not None:
                rhos.append(rho)
            scored = [r for r in group if r.get(criterion) is not None]
            if not scored:
                continue
            sign = -1 if criterion == "davies_bouldin" else 1
            pick = max(scored, key=lambda r: sign * r[criterion])
            best = max(r["nmi_truth"] for r in group)
            hits += pick["nmi_truth"] == best
            lost.append(best - pick["nmi_truth"])
        print(f"  {criterion:16s} {hits}/{len(draws)}  rho {np.mean(rhos) if rhos else float('nan'):.3f}  "
              f"lost {np.mean(lost) if lost else float('nan'):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/nscnet-quality", help="dataset cache, MLflow store, rows file")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--k", type=int, default=K, help="clusters (the expert labels are 9)")
    parser.add_argument("--only", default="", help="comma-separated substrings of configuration names to run")
    parser.add_argument("--skip", default="", help="comma-separated substrings of configuration names not to run")
    parser.add_argument("--rows", default="", help="rows file (default <work>/quality_rows.json); "
                                                   "--merge adds other rows files to the table")
    parser.add_argument("--merge", default="", help="comma-separated rows files of other calls, shown in the table")
    parser.add_argument("--fresh", action="store_true", help="forget rows measured before")
    parser.add_argument("--sizes", default="", help="issue 13 table: syllable subset sizes, e.g. 50,200,1000,0 "
                                                    "(0 = all); runs SIZE_RECIPES instead of the configurations")
    parser.add_argument("--draws", type=int, default=3, help="--sizes: seeded draws per subset size")
    parser.add_argument("--synth", default="", help="--sizes: synthetic sets songs:types:snr_db, e.g. 60:5:20,600:12:5")
    parser.add_argument("--deep-sizes", default="", help="--sizes: subset sizes for the deep preset (quality, "
                                                         "minutes of CPU each), e.g. 50,200")
    parser.add_argument("--deep-draws", type=int, default=2, help="--sizes: seeded draws per deep subset size")
    parser.add_argument("--first-draw", type=int, default=0, help="--sizes: the first draw's seed (draws first, "
                        "first + 1, ...: more draws in parallel jobs, or on top of earlier ones)")
    parser.add_argument("--deep-full-seeds", type=int, default=1, help="--deep-sizes 0 (all segments): seeds of the "
                        "deep preset on the full set")
    parser.add_argument("--features", default="pixels", choices=("pixels", "birdnet", "birdnet-zeropad"),
                        help="--sizes: what the recipes cluster (birdnet: the optional extra nscnet[birdnet], "
                             "weights CC BY-NC-SA 4.0; birdnet-zeropad: each segment zero-padded, not its "
                             "recording around it)")
    parser.add_argument("--data", default="", help="--sizes: an existing dataset folder of the syllables "
                                                   "(default: preprocessed into <work>)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    if args.sizes or args.synth or args.deep_sizes:
        return sizes_main(args, work)
    rows_file = Path(args.rows) if args.rows else work / "quality_rows.json"
    rows = [] if args.fresh or not rows_file.exists() else json.loads(rows_file.read_text())
    data = dataset(work)
    truth = read_dataset(data).truth()
    seeds = [int(s) for s in args.seeds.split(",")]
    cache: dict = {"rows": list(rows), "live": rows}  # live: the rows of this call, as they come
    for other in sorted(work.glob("*rows.json")):  # runs of earlier calls in the same MLflow store
        cache["rows"] += json.loads(other.read_text())
    for name, run in configurations(str(data), truth, cache, args.k).items():
        if args.only and not any(part in name for part in args.only.split(",")):
            continue
        if args.skip and any(part in name for part in args.skip.split(",")):
            continue
        for seed in seeds:
            if any(r["configuration"] == name and r["seed"] == seed and r.get("k", K) == args.k for r in rows):
                continue
            started, cpu = time.perf_counter(), cpu_seconds()
            metrics = run(seed)
            keep = {k: metrics.get(k) for k in ("nmi_truth", "ari_truth", "n_clusters", "noise_fraction", "run_id")
                    + CRITERIA}
            rows.append({"configuration": name, "k": args.k, "seed": seed, **keep, "cpu_minutes": (cpu_seconds() - cpu) / 60,
                         "wall_minutes": (time.perf_counter() - started) / 60})
            rows_file.write_text(json.dumps(rows, indent=1, default=float))
            print(f"[quality] {name} k {args.k} seed {seed}: nmi_truth={keep['nmi_truth']:.3f}", flush=True)
    for other in filter(None, args.merge.split(",")):
        rows += [r for r in json.loads(Path(other).read_text()) if r not in rows]
    print_table(rows, work)


def print_table(rows: list[dict], work: Path) -> None:
    def fmt(v, spec=".3f"):
        return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)

    groups = list(dict.fromkeys((r["configuration"], r.get("k", K)) for r in rows))
    header = ("| configuration | K | seeds | nmi_truth mean ± std | ari_truth | silhouette | stability | "
              "n_clusters | CPU min/run |")
    print("\n" + header + "\n|" + "---|" * 9)
    for name, k in groups:
        group = [r for r in rows if r["configuration"] == name and r.get("k", K) == k]
        nmi = np.array([r["nmi_truth"] for r in group], dtype=float)

        def mean(key):
            values = [r[key] for r in group if r.get(key) is not None]
            return float(np.mean(values)) if values else None
        print(f"| {name} | {k} | {len(group)} | {nmi.mean():.3f} ± {nmi.std():.3f} | {fmt(mean('ari_truth'))} | "
              f"{fmt(mean('silhouette'))} | {fmt(mean('stability'))} | {fmt(mean('n_clusters'), '.1f')} | "
              f"{fmt(mean('cpu_minutes'), '.2f')} |")
    correlations = rank_correlations(rows, CRITERIA, "nmi_truth")
    print(f"\nSpearman rank correlation with nmi_truth over {len(rows)} runs "
          "(davies_bouldin negated: +1 = ranks runs as the truth does):")
    for name, value in correlations.items():
        print(f"  {name:18s} {fmt(value)}")


if __name__ == "__main__":
    sys.exit(main())
