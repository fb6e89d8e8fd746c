"""Which size-aware `pca_dim` rule (nscnet/defaults.py) to choose: nmi_truth of PCA + k-means at
the true K on seeded draws of the Bengalese finch syllables, under candidate rules for the
number of PCA components, with and without whitening (L2 last, as BASENet's default).

The images are those of benchmarks/quality.py and features.py (0.13 s centred, 64 x 128 log-mel,
8,192 pixels); the draws are features.py's (`subset`: draw s is default_rng(1000 + s)). The
candidate rules all keep the paper's 128 at large N; "clamp (before)" is what the post-processing
did before the rule existed (min(pca_dim, N - 1, D), and N / 4 when whitened). Prints one line
per (size, whiten, rule): mean ± std nmi_truth over the draws and the components used.

    PYTHONPATH=$PWD python benchmarks/pca_dim.py --work /tmp/features-work --sizes 50,200,1000,0 --draws 5
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/numba-cache")
sys.path.insert(0, str(Path(__file__).resolve().parent))

USUAL = 128  # BASENet's pca_dim, the paper's


def rules(n: int, d: int, explained: np.ndarray, whiten: bool) -> dict[str, int]:
    """rule name -> components for N segments of D features (`explained`: cumulative ratio)."""
    top = max(1, min(n - 1, d))
    cap = lambda v: int(max(2, min(USUAL, top, round(v))))  # noqa: E731
    out = {"clamp (before)": int(min(USUAL, top, max(1, n // 4) if whiten else top)),
           "N-1": cap(n - 1), "N/4": cap(n / 4), "N/8": cap(n / 8), "N/16": cap(n / 16),
           "sqrt(N)": cap(math.sqrt(n)), "max(sqrt(N), N/16)": cap(max(math.sqrt(n), n / 16)), "2 sqrt(N)": cap(2 * math.sqrt(n)),
           "var 0.8": cap(int(np.searchsorted(explained, 0.8)) + 1),
           "var 0.9": cap(int(np.searchsorted(explained, 0.9)) + 1),
           "fixed 16": cap(16), "fixed 32": cap(32)}
    return out


def main() -> None:
    from sklearn.decomposition import PCA
    from sklearn.metrics import normalized_mutual_info_score as nmi
    from sklearn.preprocessing import normalize

    from features import dataset, subset, truth_of
    from nscnet.clustering.cluster import fit_clusters
    from nscnet.config import BasenetConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/features-work")
    parser.add_argument("--sizes", default="50,200,1000", help="segments per draw (0 = all 7,652)")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--k", type=int, default=9)
    args = parser.parse_args()
    data = dataset(Path(args.work))
    images = np.load(data / "spectrograms.npy", mmap_mode="r")
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for draw in range(args.draws if size else 1):
            indices = subset(len(images), size, draw)
            truth = truth_of(data, indices)
            x = np.asarray(images[indices], dtype=np.float32).reshape(len(indices), -1)
            n, d = x.shape
            full = PCA(n_components=min(n - 1, d, 512), random_state=draw).fit(x)
            explained = np.cumsum(full.explained_variance_ratio_)
            for whiten in (True, False):
                chosen = rules(n, d, explained, whiten)
                scores: dict[int, float] = {}
                for rule, dim in chosen.items():
                    if dim not in scores:
                        z = PCA(n_components=dim, whiten=whiten, random_state=draw).fit_transform(x)
                        z = normalize(np.nan_to_num(z))
                        labels = fit_clusters(z, BasenetConfig(k=args.k, seed=draw)).labels
                        scores[dim] = float(nmi(truth, labels))
                    rows.append((n, whiten, rule, dim, scores[dim]))
            print(f"n={n} draw {draw} done", flush=True)
    print("\n| segments | whiten | rule | components (mean) | nmi_truth mean ± std |")
    print("|---|---|---|---|---|")
    for key in dict.fromkeys((r[0], r[1], r[2]) for r in rows):
        sel = np.array([(r[3], r[4]) for r in rows if (r[0], r[1], r[2]) == key])
        print(f"| {key[0]} | {key[1]} | {key[2]} | {sel[:, 0].mean():.0f} | "
              f"{sel[:, 1].mean():.3f} ± {sel[:, 1].std():.3f} |")


if __name__ == "__main__":
    main()
