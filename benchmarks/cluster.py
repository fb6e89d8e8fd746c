"""Speed and quality of BASENet and k-means on the Bengalese finch syllables; prints its figures.

    PYTHONPATH=. python benchmarks/cluster.py [--data DATASET] [--skip-quality]

Without --data the 7,652 syllables of ../shared/data/bengalese-finch are preprocessed once
(64 x 128 log-mel, 0.13 s, 500 Hz high-pass, n_fft 512) into /tmp/nscnet-bench/syllables.
MLflow runs go to a throw-away SQLite store in a temporary folder.

Prints:
1. wall time of a full `basenet` run (paper defaults, K = 9, --truth, figures and exports);
2. wall time of one `basenet` run sweeping K = 64, 128, ..., 2048 (target: under 60 s);
3. k-means at K = 2048 on the 7,652 x 128 post-processed features: scikit-learn against faiss,
   seconds and inertia (`kmeans_backend=auto` uses faiss from FAISS_MIN_K on);
4. nmi_truth at K = 9 (or by density) for PCA+KMeans, paper defaults (whiten+L2),
   PCA+HDBSCAN and UMAP+HDBSCAN (AVGN).
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

from nscnet.clustering.cluster import FAISS_MIN_K, kmeans, truth_metrics  # noqa: E402
from nscnet.clustering.evaluate import cluster_features  # noqa: E402
from nscnet.config import BasenetConfig, replace  # noqa: E402
from nscnet.features.postprocess import postprocess  # noqa: E402
from nscnet.images.dataset import read_dataset  # noqa: E402
from nscnet.models.basenet import compute_features, evaluation_params, run_basenet  # noqa: E402

BENGALESE = ROOT.parent / "shared" / "data" / "bengalese-finch"


def dataset_path(given: str) -> Path:
    if given:
        return Path(given)
    sys.path.insert(0, str(ROOT))
    from tests.fixtures_cluster import preprocess_syllables

    started = time.perf_counter()
    path = preprocess_syllables(BENGALESE, Path("/tmp/nscnet-bench/syllables"))
    print(f"dataset: {path} ({time.perf_counter() - started:.1f} s to preprocess or find in the cache)")
    return path


def timed(label: str, function, *args, **kwargs):
    started = time.perf_counter()
    out = function(*args, **kwargs)
    seconds = time.perf_counter() - started
    print(f"{label}: {seconds:.1f} s")
    return out, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="", help="dataset folder (default: preprocess the Bengalese finch syllables)")
    parser.add_argument("--skip-quality", action="store_true", help="only the timings")
    args = parser.parse_args()
    data = dataset_path(args.data)
    dataset = read_dataset(data)
    print(f"segments: {len(dataset)}, image shape: {dataset.image_shape}, cpus: {os.cpu_count()}, "
          f"load average: {os.getloadavg()[0]:.1f}")
    store = tempfile.mkdtemp(prefix="nscnet-bench-")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
    os.chdir(store)

    print("\n== full BASENet runs (MLflow, figures, exports) ==")
    paper = BasenetConfig(data=str(data), k=9, pca_dim=128, truth=True)  # the paper's PCA 128 (auto gives 128 here too)
    metrics, _ = timed("basenet K=9, paper defaults (PCA 128, whiten, L2), --truth", run_basenet, paper)
    print(f"  nmi_truth {metrics['nmi_truth']:.3f}, silhouette {metrics['silhouette']:.3f}")
    sweep = replace(paper, k_values=(64, 128, 256, 512, 1024, 2048))
    metrics, _ = timed("basenet K sweep 64..2048 (6 K, auto backend), --truth", run_basenet, sweep)
    print(f"  selected_k {metrics['selected_k']} by silhouette {metrics['silhouette']:.3f}")

    print("\n== k-means at K=2048 on the post-processed features ==")
    features = compute_features(paper, dataset)
    processed, _ = postprocess(features, evaluation_params(paper))
    print(f"features: {processed.shape[0]} x {processed.shape[1]} (whiten + L2)")
    results = {}
    for backend in ("sklearn", "faiss"):
        result, seconds = timed(f"{backend:7s} K=2048 n_init={paper.n_init}", kmeans, processed, 2048,
                                n_init=paper.n_init, seed=0, backend=backend)
        results[backend] = result
        print(f"  inertia {result.inertia:.2f}")
    gap = (results["faiss"].inertia - results["sklearn"].inertia) / results["sklearn"].inertia
    print(f"faiss inertia relative to sklearn: {gap:+.2%}; auto uses faiss for K >= {FAISS_MIN_K}")

    if args.skip_quality:
        return
    print("\n== nmi_truth on the expert labels (labels used for scoring only) ==")
    truth = dataset.truth()
    variants = {
        "PCA(128) + KMeans K=9 (whiten false, L2 false)": replace(paper, whiten=False, l2=False),
        "paper defaults: PCA(128, whiten) + L2 + KMeans K=9": paper,
        "PCA(128) + HDBSCAN (min_cluster_size 50, min_samples 5)": replace(
            paper, whiten=False, l2=False, algorithm="hdbscan", min_cluster_size=50, min_samples=5),
        "UMAP(10) on PCA(128) + HDBSCAN (min_cluster_size 50, min_samples 5)": replace(
            paper, reducer="umap", umap_dim=10, whiten=False, l2=False, algorithm="hdbscan",
            min_cluster_size=50, min_samples=5),
    }
    cache = {}
    for name, cfg in variants.items():
        started = time.perf_counter()
        key = (cfg.reducer, cfg.normalize, cfg.pca_dim)
        if key not in cache:
            cache[key] = compute_features(cfg, dataset)
        labels, _, result = cluster_features(cache[key], evaluation_params(cfg))
        scores = truth_metrics(labels, truth)
        print(f"{name}: nmi_truth {scores['nmi_truth']:.3f}, v_measure {scores['v_measure_truth']:.3f}, "
              f"clusters {result.n_clusters}, noise {result.noise_fraction:.1%} "
              f"({time.perf_counter() - started:.1f} s)")


if __name__ == "__main__":
    main()
