"""Speed of the Zipf analysis (bootstrap) and of the chroma entropy; prints its figures.

    PYTHONPATH=. python benchmarks/analysis.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from nscnet.analysis import zipf
from nscnet.analysis.repertoire import repertoire_statistics
from nscnet.analysis.entropy import segment_entropy


def bench_zipf() -> None:
    for n_types, n_songs in ((64, 10_000), (512, 20_000), (2048, 100_000)):
        rng = np.random.default_rng(0)
        sizes = zipf.rank_sizes(rng.choice(n_types, size=n_songs, p=zipf.zipf_pmf(1.0, n_types)))
        start = time.perf_counter()
        metrics, _ = zipf.zipf_statistics(sizes, bootstrap=1000, seed=0)
        middle = time.perf_counter()
        repertoire_statistics(sizes, seed=0)
        end = time.perf_counter()
        print(f"zipf N={len(sizes):5d} n={n_songs:6d}: statistics with 1000 bootstrap draws {middle - start:.2f} s "
              f"(zipf_s {metrics['zipf_s']:.3f}, ks p {metrics['zipf_ks_pvalue']:.3f}); repertoire {end - middle:.2f} s")


def bench_entropy() -> None:
    sr = 22050
    rng = np.random.default_rng(0)
    segments = [rng.standard_normal(int(sr * d)).astype(np.float32) for d in rng.uniform(0.05, 2.0, size=200)]
    start = time.perf_counter()
    for y in segments:
        segment_entropy(y, sr)
    seconds = sum(len(y) for y in segments) / sr
    took = time.perf_counter() - start
    print(f"entropy: {len(segments)} segments ({seconds:.0f} s of audio) in {took:.2f} s: "
          f"{len(segments) / took:.0f} segments_per_second")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()
    bench_zipf()
    bench_entropy()
