"""Archive scale: 100,000 synthetic segments of 64 x 512; prints how each cost grows with N.

    PYTHONPATH=. python benchmarks/archive.py [--sizes 10000,30000,100000] [--dir /tmp/nscnet-archive]
        [--preprocess-songs 2000] [--feature-images 256] [--skip-preprocess] [--skip-fit-check] [--preprocess-only] [--keep]

1. Preprocess on real audio cutting: `write_synthetic` recordings of --preprocess-songs songs,
   preprocessed (2.5 s segments, 64 x 512 log-mel) with 1 and 2 workers in fresh processes:
   segments/s, peak RSS of the process tree, and the time 100,000 segments take at that rate
   (extrapolated: the cost per segment does not depend on N, and memory is one image per worker
   in flight plus the memmap writer).
2. The image dataset: `nscnet.audio.synth.write_image_dataset` writes the largest size once
   (float16 memmap, 6.5 GB at 100,000); each smaller size is its first N rows.
3. Per size N, in a fresh process (peak private memory sampled every 20 ms: RssAnon, i.e.
   without the memmap's page cache, plus VmHWM which counts the mapped file pages too):
   - BASENet features: standardize-free PCA(128) of the flattened images, read from the
     memmap in chunks, fitted on `pca_fit_rows(N, 32768)` rows (8,192 = 1 GiB beyond that);
   - BASENet clustering at K = 9 (whiten + L2, k-means n_init 3, silhouette on 5,000, NMI);
   - a K sweep 64, 128, ..., 2048 on the same features (n_init 1 per K here to bound the
     benchmark; the default n_init 3 costs 3x the Lloyd part);
   - NSCNet: the per-epoch clustering (post-processing PCA 128 + whiten + L2, k-means at the
     auto k, n_init 3) of (N, 512) embeddings, and one feature pass of the default network
     (efficientnet_b0) measured on --feature-images images spread over the memmap and
     extrapolated to N (on CPU the full pass at 100,000 takes hours; benchmarks/gpu.py measures
     it on a GPU).
4. Sample-fit check at the smallest size (where the full fit fits in memory): PCA fitted on a
   sample of 2,048 and 4,096 rows against the full fit: explained variance of the whole data,
   and the k-means (K = 9) inertia of the sample-fit labels measured in the full-fit space
   [target: within 1%].
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "numba-cache"))
os.environ.setdefault("TQDM_DISABLE", "1")

SWEEP = (64, 128, 256, 512, 1024, 2048)


class MemorySampler:
    """Peak RssAnon (private memory, MB) of this process, sampled every 20 ms in a thread."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def status(field: str) -> float:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.status("RssAnon"))
            time.sleep(0.02)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {"rss_anon_peak_mb": max(self.peak, self.status("RssAnon")), "vm_hwm_mb": self.status("VmHWM")}


def one_size(data: Path, n: int, feature_images: int) -> dict:
    """Every measurement of part 3 at the first n rows of the dataset at `data`."""
    import logging

    logging.disable(logging.WARNING)
    import numpy as np
    import torch

    from nscnet.models import training
    from nscnet.clustering.cluster import internal_metrics, kmeans, truth_metrics
    from nscnet.config import BasenetConfig, NscnetConfig, replace, with_network_defaults
    from nscnet.images.dataset import TorchImages, read_dataset
    from nscnet.defaults import resolve
    from nscnet.models import deepcluster
    from nscnet.models.basenet import evaluation_params
    from nscnet.models.nscnet import build_model, extract_features
    from nscnet.features.postprocess import pca_fit_rows, postprocess, postprocess_images

    torch.set_num_threads(1)
    sampler = MemorySampler()
    dataset = read_dataset(data)
    images = dataset.images[:n]
    truth = dataset.truth()[:n]
    out: dict = {"n": n, "pca_fit_rows": pca_fit_rows(n, int(np.prod(images.shape[1:])))}

    cfg = replace(BasenetConfig(data=str(data)), k=9)
    started = time.perf_counter()
    features, notes = postprocess_images(images, replace(cfg, whiten=False, l2=False))
    out["basenet_features_s"] = time.perf_counter() - started
    out["pca_explained_variance"] = notes.get("pca_explained_variance")
    started = time.perf_counter()
    processed, _ = postprocess(features, evaluation_params(cfg))
    result = kmeans(processed, 9, n_init=cfg.n_init, seed=cfg.seed)
    metrics = internal_metrics(processed, result.labels, seed=cfg.seed)
    out["basenet_cluster_s"] = time.perf_counter() - started
    out["basenet_nmi_truth"] = truth_metrics(result.labels, truth)["nmi_truth"]
    out["basenet_silhouette"] = metrics["silhouette"]

    sweep = {}
    for k in SWEEP:
        started = time.perf_counter()
        res = kmeans(processed, k, n_init=1, seed=cfg.seed)
        sweep[k] = {"seconds": time.perf_counter() - started, "inertia": res.inertia}
    out["sweep"] = sweep
    out["sweep_s"] = sum(v["seconds"] for v in sweep.values())

    # NSCNet per-epoch clustering of (N, 512) embeddings: here a fixed random ReLU projection of
    # the BASENet features (an untrained network's embeddings are of that kind)
    rng = np.random.default_rng(0)
    embeddings = np.maximum(features @ rng.normal(size=(features.shape[1], 512)).astype(np.float32), 0)
    ncfg = resolve(with_network_defaults(NscnetConfig(data=str(data))), n)[0]
    started = time.perf_counter()
    labels, _, _, _ = deepcluster.cluster_epoch(embeddings, ncfg, None)
    out["nscnet_cluster_s"] = time.perf_counter() - started
    out["nscnet_k"] = deepcluster.training_k(ncfg)
    del embeddings

    if feature_images:
        model = build_model(ncfg)
        device = torch.device("cpu")
        pick = np.linspace(0, n - 1, feature_images).astype(np.int64)
        class Spread(TorchImages):  # rows `pick` of the memmap, numbered 0..len(pick)-1 for extract_features
            def __getitem__(self, item: int):
                return super().__getitem__(item)[0], item

        loader = training.make_loader(Spread(data, pick), batch_size=2 * ncfg.batch_size, num_workers=0,
                                      device=device)
        precision = training.Precision(device, False)
        started = time.perf_counter()
        extract_features(model, loader, device, precision)
        seconds = time.perf_counter() - started
        out["nscnet_feature_images_per_s"] = feature_images / seconds
        out["nscnet_feature_pass_s_extrapolated"] = n / (feature_images / seconds)
        out["nscnet_backbone"] = ncfg.backbone
    out.update(sampler.stop())
    return out


def fit_check(data: Path, n: int, samples: tuple[int, ...]) -> dict:
    """Part 4: sample-fitted against full-fitted PCA at the first n rows."""
    import logging

    logging.disable(logging.WARNING)
    import numpy as np

    from nscnet.clustering.cluster import kmeans
    from nscnet.config import BasenetConfig, replace
    from nscnet.images.dataset import read_dataset
    from nscnet.models.basenet import evaluation_params
    from nscnet.features.postprocess import postprocess, postprocess_images

    sampler = MemorySampler()
    images = read_dataset(data).images[:n]
    cfg = replace(BasenetConfig(data=str(data)), k=9)
    params = replace(cfg, whiten=False, l2=False)

    def variance_captured(pipeline) -> float:  # share of the whole data's variance in the fitted components
        pca = pipeline.named_steps["pca"]
        total = kept = 0.0
        mean = np.zeros(images.shape[1] * images.shape[2])
        for start in range(0, n, 2048):
            mean += np.asarray(images[start:start + 2048], dtype=np.float64).reshape(-1, mean.size).sum(axis=0)
        mean /= n
        for start in range(0, n, 2048):
            block = np.asarray(images[start:start + 2048], dtype=np.float32).reshape(-1, mean.size) - mean.astype(np.float32)
            total += float(np.einsum("ij,ij->", block, block))
            kept += float(np.square(block @ pca.components_.T).sum())
        return kept / total

    started = time.perf_counter()
    full, full_notes = postprocess_images(images, params, fit_rows=n)
    full_seconds = time.perf_counter() - started
    full_processed, _ = postprocess(full, evaluation_params(cfg))
    full_km = kmeans(full_processed, 9, n_init=cfg.n_init, seed=cfg.seed)

    def inertia_in_full_space(labels) -> float:
        total = 0.0
        for c in np.unique(labels):
            members = full_processed[labels == c]
            total += float(np.square(members - members.mean(axis=0)).sum())
        return total

    out = {"n": n, "full": {"seconds": full_seconds, "variance": variance_captured(full_notes["pipeline"]),
                            "inertia": inertia_in_full_space(full_km.labels)}}
    for rows in samples:
        started = time.perf_counter()
        sample, notes = postprocess_images(images, params, fit_rows=rows)
        seconds = time.perf_counter() - started
        processed, _ = postprocess(sample, evaluation_params(cfg))
        km = kmeans(processed, 9, n_init=cfg.n_init, seed=cfg.seed)
        out[rows] = {"seconds": seconds, "variance": variance_captured(notes["pipeline"]),
                     "inertia": inertia_in_full_space(km.labels)}
    out.update(sampler.stop())
    return out


def child(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


PREPROCESS_CODE = """
import json, resource, logging, sys
logging.disable(logging.WARNING)
from nscnet.config import PreprocessConfig
from nscnet.images.preprocess import preprocess
r = preprocess(PreprocessConfig(audio=sys.argv[1], out=sys.argv[2], workers=int(sys.argv[3]), duration_s=2.5,
                                force=True))
self_, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": r.seconds, "segments": r.n_segments, "ok": r.n_ok,
                  "rss_mb": self_.ru_maxrss / 1024, "worker_rss_mb": kids.ru_maxrss / 1024}))
"""


def preprocess_part(tmp: Path, songs: int) -> dict:
    from nscnet.audio.synth import write_synthetic
    from nscnet.config import SynthConfig

    audio = tmp / "audio"
    started = time.perf_counter()
    write_synthetic(SynthConfig(out=str(audio), songs=songs, recordings=max(4, songs // 250), types=64))
    out = {"songs": songs, "synth_s": time.perf_counter() - started}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for workers in (1, 2):
        done = subprocess.run([sys.executable, "-c", PREPROCESS_CODE, str(audio), str(tmp / f"pre{workers}"),
                               str(workers)], env=env, capture_output=True, text=True, check=True)
        out[workers] = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(audio, ignore_errors=True)
    for workers in (1, 2):
        shutil.rmtree(tmp / f"pre{workers}", ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "nscnet-archive"))
    parser.add_argument("--preprocess-songs", type=int, default=2000)
    parser.add_argument("--feature-images", type=int, default=256)
    parser.add_argument("--skip-preprocess", action="store_true")
    parser.add_argument("--skip-fit-check", action="store_true")
    parser.add_argument("--preprocess-only", action="store_true", help="part 1 only (run it on an idle machine)")
    parser.add_argument("--keep", action="store_true", help="keep the dataset (6.5 GB at 100,000) for another run")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fit-check", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    tmp = Path(args.dir)
    data = tmp / "dataset"
    if args.one:
        print(json.dumps(one_size(data, args.one, args.feature_images)))
        return
    if args.fit_check:
        print(json.dumps(fit_check(data, args.fit_check, (2048, 4096))))
        return

    sizes = sorted(int(s) for s in args.sizes.split(","))
    tmp.mkdir(parents=True, exist_ok=True)
    print(f"# archive benchmark: sizes {sizes}, 64 x 512 float16 images in {tmp}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, torch threads 1", flush=True)
    if not args.skip_preprocess:
        pre = preprocess_part(tmp, args.preprocess_songs)
        rate = {w: pre[w]["segments"] / pre[w]["seconds"] for w in (1, 2)}
        print(f"1. preprocess, real audio cutting ({pre['songs']} synthetic songs, 2.5 s, 64 x 512; "
              f"recordings written in {pre['synth_s']:.0f} s):", flush=True)
        for w in (1, 2):
            print(f"   workers={w}: {rate[w]:.0f} segments/s, peak RSS {pre[w]['rss_mb']:.0f} MB "
                  f"(+ {pre[w]['worker_rss_mb']:.0f} MB per worker process) -> 100,000 segments in "
                  f"{100_000 / rate[w] / 60:.1f} min (extrapolated)")
        print(f"   2 workers / 1 = {rate[2] / rate[1]:.2f}x  [load average {os.getloadavg()[0]:.1f}]", flush=True)
    if args.preprocess_only:
        return

    from nscnet.audio.synth import write_image_dataset
    from nscnet.images.dataset import read_dataset

    largest = sizes[-1]
    try:
        have = len(read_dataset(data)) if (data / "preprocess.json").is_file() else 0
    except Exception:
        have = 0
    if have < largest:
        started = time.perf_counter()
        write_image_dataset(data, largest, types=64)
        print(f"2. image dataset: {largest} segments written in {time.perf_counter() - started:.0f} s "
              f"({(data / 'spectrograms.npy').stat().st_size / 1e9:.1f} GB float16)", flush=True)
    else:
        print(f"2. image dataset: reusing {have} segments in {data}", flush=True)

    rows = []
    for n in sizes:
        row = child(["--one", str(n), "--dir", str(tmp), "--feature-images", str(args.feature_images)])
        rows.append(row)
        print(f"   N={n}: " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                                         if k != "sweep"}), flush=True)
    print("3. growth (seconds; memory MB; per-epoch k and feature pass: see the docstring)")
    columns = [("BASENet features (sample PCA)", "basenet_features_s"), ("BASENet k-means K=9 + metrics", "basenet_cluster_s"),
               ("K sweep 64..2048 (n_init 1)", "sweep_s"), ("  of which K=2048", None),
               ("NSCNet per-epoch clustering", "nscnet_cluster_s"),
               ("NSCNet feature pass (extrapolated)", "nscnet_feature_pass_s_extrapolated"),
               ("peak private memory (RssAnon)", "rss_anon_peak_mb"), ("VmHWM incl. mapped file pages", "vm_hwm_mb")]
    print("   " + f"{'N':<38}" + "".join(f"{r['n']:>11,}" for r in rows) + f"{'growth':>10}")
    for title, key in columns:
        values = [r["sweep"]["2048"]["seconds"] if key is None else r.get(key) for r in rows]
        if any(v is None for v in values):
            continue
        growth = values[-1] / values[0] if values[0] else float("nan")
        print("   " + f"{title:<38}" + "".join(f"{v:>11.1f}" for v in values) + f"{growth:>9.1f}x")
    print(f"   N grows {rows[-1]['n'] / rows[0]['n']:.0f}x; pca_fit_rows " + ", ".join(str(r["pca_fit_rows"]) for r in rows)
          + f"; NSCNet k {rows[-1]['nscnet_k']}; nmi_truth K=9 " + ", ".join(f"{r['basenet_nmi_truth']:.3f}" for r in rows))

    if not args.skip_fit_check:
        check = child(["--fit-check", str(sizes[0]), "--dir", str(tmp)])
        full = check["full"]
        print(f"4. sample-fitted PCA against the full fit at N={check['n']} (full fit {full['seconds']:.0f} s, "
              f"peak private memory {check['rss_anon_peak_mb']:.0f} MB):")
        for rows_ in ("2048", "4096"):
            s = check[rows_]
            print(f"   fit on {rows_} rows: {s['seconds']:.0f} s; variance captured {s['variance']:.4f} vs "
                  f"{full['variance']:.4f} ({(full['variance'] - s['variance']) / full['variance']:.2%} less); "
                  f"K=9 inertia in the full-fit space {(s['inertia'] - full['inertia']) / full['inertia']:+.2%}  "
                  f"[target within 1%]")
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
        print(f"removed {data}")


if __name__ == "__main__":
    main()
