"""BASENet and its K sweep against their arithmetic bounds, measured side by side (issue 16).

    PYTHONPATH=. python benchmarks/basenet.py [--data DATASET] [--check-inertia] [--silhouette-samples]

Without --data the 7,652 Bengalese finch syllables (64 x 128, the settings of
tests/fixtures_cluster.py:preprocess_syllables) are preprocessed once into /tmp/speed-bf.
MLflow runs go to a throw-away SQLite store, created before anything is timed.

Prints, each with its target:
1. a full `basenet` run (paper defaults: PCA 128 + whitening + L2, K = 9, --truth, figures,
   exports, stability) against a bare scikit-learn PCA(128) fit of the same standardized
   matrix, in this process [<= 2x]; then where the run's time went (MLflow's own timings);
2. a `basenet` K sweep 64, 128, ..., 2048 (given the PCA features, as a study trial is) against
   the bare matrix products of the Lloyd iterations it runs (one (N, d) x (d, K) product per
   iteration; Lloyd stops once the assignments settle, so they are counted) at this machine's sgemm rate, measured
   here [<= 1.5x];
   --check-inertia: each K's inertia against scikit-learn's KMeans (k-means++, same n_init)
   [within 1%];
   --silhouette-samples: silhouette per K on seeded samples of 1,000..5,000 points against
   all points (the size `silhouette_sample` justifies, docs/clustering.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/numba-cache")

import numpy as np  # noqa: E402

BENGALESE = ROOT.parent / "shared" / "data" / "bengalese-finch"
SWEEP = (64, 128, 256, 512, 1024, 2048)


def dataset_path(given: str) -> Path:
    if given:
        return Path(given)
    from tests.fixtures_cluster import preprocess_syllables

    return preprocess_syllables(BENGALESE, Path("/tmp/speed-bf"))


def sgemm_rate(x: np.ndarray, k: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the (N, d) x (d, k) float32 product the Lloyd iterations do, best of `repeats`."""
    c = np.random.default_rng(0).normal(size=(k, x.shape[1])).astype(np.float32)
    x @ c.T
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        x @ c.T
        best = min(best, time.perf_counter() - started)
    return 2 * x.shape[0] * k * x.shape[1] / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="", help="dataset folder (default: the Bengalese finch syllables)")
    parser.add_argument("--check-inertia", action="store_true", help="scikit-learn k-means++ at each K (slow)")
    parser.add_argument("--silhouette-samples", action="store_true", help="silhouette per K on samples vs all")
    parser.add_argument("--skip-run", action="store_true", help="only the K sweep")
    parser.add_argument("--backend", default="faiss", choices=("faiss", "torch"),
                        help="the sweep's k-means backend (torch: import torch first, as in a process that trains)")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from nscnet.runs import tracking
    from nscnet.clustering.cluster import LLOYD_ITERATIONS, free_cores, kmeans, sweep_seeds
    from nscnet.config import BasenetConfig, replace
    from nscnet.images.dataset import read_dataset
    from nscnet.models.basenet import compute_features, evaluation_params, run_basenet
    from nscnet.features.postprocess import postprocess

    data = dataset_path(args.data)
    dataset = read_dataset(data)
    store = tempfile.mkdtemp(prefix="nscnet-bench-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
    os.chdir(store)
    paper = BasenetConfig(data=str(data), k=9, pca_dim=128, truth=True)  # the paper's PCA 128 (auto gives 128 here too)
    tracking.setup(paper.experiment)  # the store's tables: made once, not part of any run
    print(f"# {len(dataset)} segments of {dataset.image_shape[0]} x {dataset.image_shape[1]}; {os.cpu_count()} CPUs, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, free cores {free_cores()}, "
          f"load average {os.getloadavg()[0]:.2f}")

    if not args.skip_run:
        flat = dataset.flat()
        standardized = StandardScaler().fit_transform(flat)
        started = time.perf_counter()
        PCA(n_components=paper.pca_dim, random_state=paper.seed).fit(standardized)
        bare = time.perf_counter() - started
        del flat, standardized
        started = time.perf_counter()
        metrics = run_basenet(paper)
        seconds = time.perf_counter() - started
        print(f"1. basenet K=9 (--truth, figures, exports, stability_runs {paper.stability_runs}): {seconds:.2f} s; "
              f"bare PCA({paper.pca_dim}) fit {bare:.2f} s = {seconds / bare:.2f}x  [target <= 2x]")
        run = tracking.get_run(metrics["run_id"])
        m = run.data.metrics
        print(f"   features (read, standardize, PCA) {m['feature_seconds']:.2f} s, clustering + scores + "
              f"stability {m['cluster_seconds']:.2f} s, the rest (figures, model, exports, MLflow) "
              f"{seconds - m['feature_seconds'] - m['cluster_seconds']:.2f} s; nmi_truth {m['nmi_truth']:.4f}, "
              f"silhouette {m['silhouette']:.4f}, stability {m['stability']:.4f}")
        print(f"   PNG copies of the figures: rendered after the run by nscnet.runs.pngjob "
              f"(waited {_wait_pngs(tracking):.1f} s more)")

    features = compute_features(paper, dataset)
    processed, _ = postprocess(features, evaluation_params(paper))
    x = np.ascontiguousarray(processed, dtype=np.float32)
    rate = sgemm_rate(x)
    n, d = processed.shape
    sweep = replace(paper, k_values=SWEEP, kmeans_backend=args.backend)
    if args.backend == "torch":  # a process that trains has torch loaded; its import (about 1.3 s) is not timed
        started = time.perf_counter()
        import torch  # noqa: F401

        print(f"   import torch {time.perf_counter() - started:.2f} s (not part of the sweep's time)")
    started = time.perf_counter()
    metrics = run_basenet(sweep, features=features)
    seconds = time.perf_counter() - started
    png_wait = _wait_pngs(tracking)  # the sweep's PNG copies: drawn now, not during the timings below
    # the Lloyd iterations the sweep ran: they stop once the assignments settle, so they are
    # counted by clustering again, outside the timing, from the same shared seeds (same results)
    started = time.perf_counter()
    seeds = sweep_seeds(x, SWEEP, n_init=paper.n_init, seed=paper.seed, backend=args.backend)
    seeding = time.perf_counter() - started
    iterations = {k: kmeans(x, k, n_init=paper.n_init, seed=paper.seed, backend=args.backend, seeds=seeds).iterations
                  for k in SWEEP}
    flops = sum(iterations[k] * 2 * n * k * d for k in SWEEP)
    bound = flops / rate
    print(f"2. basenet K sweep {SWEEP[0]}..{SWEEP[-1]} ({len(SWEEP)} K, n_init {paper.n_init}, {args.backend}): {seconds:.2f} s; "
          f"Lloyd iterations run {sum(iterations.values())} ({', '.join(f'K={k}: {v}' for k, v in iterations.items())}; "
          f"at most {LLOYD_ITERATIONS} a restart); their bare products {flops / 1e9:.0f} GFLOP at {rate / 1e9:.1f} "
          f"GFLOP/s = {bound:.2f} s -> {seconds / bound:.2f}x  [target <= 1.5x]")
    print(f"   selected_k {metrics['selected_k']} (silhouette {metrics['silhouette']:.4f}), "
          f"cluster_seconds {metrics['cluster_seconds']:.2f}; of it, the k-means++ seeding at K={SWEEP[-1]} "
          f"(once for every K; timed again alone) {seeding:.2f} s = {seeding / bound:.2f}x the Lloyd products; "
          f"PNG copies waited for {png_wait:.1f} s after the run")
    history = {k: v for k, v in tracking.metric_history(metrics["run_id"], "inertia")}

    if args.check_inertia:
        from sklearn.cluster import KMeans

        worst = 0.0
        for k in SWEEP:
            started = time.perf_counter()
            reference = KMeans(n_clusters=k, init="k-means++", n_init=paper.n_init, random_state=0).fit(processed)
            gap = history[k] / reference.inertia_ - 1
            worst = max(worst, gap)
            print(f"   K={k}: inertia {history[k]:.2f}, scikit-learn {reference.inertia_:.2f} ({gap:+.2%}; "
                  f"{time.perf_counter() - started:.1f} s)")
        print(f"   worst inertia gap {worst:+.2%}  [target within +1%]")

    if args.silhouette_samples:
        from sklearn.metrics import silhouette_score

        from nscnet.clustering.cluster import silhouette

        print("   silhouette per K: all points; scikit-learn's sample_size= (the sample clustered alone); "
              "nscnet's estimate (sampled points against all points); mean +- sd over 5 seeds")
        for k in SWEEP:
            labels = kmeans(processed, k, n_init=paper.n_init, seed=0).labels
            full = silhouette_score(processed, labels)
            row = []
            for size in (1000, 2000, 5000):
                theirs = [silhouette_score(processed, labels, sample_size=size, random_state=s) for s in range(5)]
                started = time.perf_counter()
                ours = [silhouette(processed, labels, sample_size=size, seed=s) for s in range(5)]
                each = (time.perf_counter() - started) / 5
                row.append(f"{size}: scikit-learn {np.mean(theirs):.4f} +- {np.std(theirs):.4f}, "
                           f"nscnet {np.mean(ours):.4f} +- {np.std(ours):.4f} ({each:.2f} s)")
            print(f"   K={k}: all {full:.4f}; " + "; ".join(row))


def _wait_pngs(tracking) -> float:
    started = time.perf_counter()
    tracking.wait_for_pngs()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
