"""NSCNet epoch speed and memory: prints its figures, asserts nothing.

1. Training speed: images per second of the full loop (`nscnet.models.nscnet.train_epoch`:
   memmap DataLoader, cluster-uniform sampler, SpecAugment, head, Adam) against a bare loop
   of the same model, head and optimizers on random tensors already in memory. Target >= 0.85.
2. Feature extraction: `extract_features` over the memmap DataLoader against the same model
   on in-memory tensors. Target >= 0.9.
3. Clustering share: the per-epoch post-processing + k-means + metrics on N embeddings at
   K=64, as a share of an epoch (extraction + clustering + training of N images, the latter two
   from the measured rates). Target < 10%.
4. Memory: peak resident memory (PSS, main process + DataLoader workers) of a whole
   `run_nscnet` (1 epoch) on a dataset (e.g. the Bengalese finch syllables) and on a random
   one 4x larger, each in a fresh process; anonymous memory (what the processes allocate)
   apart from file-backed pages (the memmap: page cache the kernel can drop). Target: growth
   under 300 MB.
On CUDA the speed part runs with and without mixed precision.

    python benchmarks/nscnet_epoch.py --height 64 --width 128 --steps 6 --threads 2 \\
        --memory-data ../shared/bengalese-64x128 --memory-backbone small_cnn
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("NSCNET_PROGRESS", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from vaenet_epoch import _peak_memory, random_dataset, run_memory_child  # noqa: E402  (shared with VAENet's)


def _timed(fn, device) -> float:
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def speed(args: argparse.Namespace, amp: bool) -> None:
    from nscnet.config import NscnetConfig, with_network_defaults
    from nscnet.images.dataset import TorchImages
    from nscnet.models.arcface import make_head
    from nscnet.models.nscnet import build_model, prepare_model, extract_features, train_epoch
    from nscnet.models.sampler import ClusterUniformSampler
    from nscnet.models.specaugment import SpecAugment
    from nscnet.models.training import Precision, choose_device, make_loader, to_device_batch

    device = choose_device(args.device)
    precision = Precision(device, amp)
    cfg = with_network_defaults(NscnetConfig(batch_size=args.batch_size, backbone=args.backbone, k=args.k))
    n = args.steps * args.batch_size
    print(f"device {device.type} ({precision.name}), torch threads {torch.get_num_threads()}, backbone "
          f"{args.backbone}, images {args.height} x {args.width}, batch {args.batch_size}, {args.steps} steps, "
          f"num_workers {args.num_workers}")
    torch.manual_seed(0)
    model = prepare_model(build_model(cfg), device)
    head = make_head("softmax", cfg.embedding_dim, args.k).to(device)
    optimizers = [torch.optim.Adam(model.parameters(), lr=cfg.lr), torch.optim.Adam(head.parameters(), lr=cfg.lr)]
    labels = np.arange(n) % args.k
    augment = SpecAugment(cfg.time_warp, cfg.freq_mask, cfg.freq_masks, cfg.time_mask, cfg.time_masks)

    with tempfile.TemporaryDirectory() as tmp:
        data = random_dataset(Path(tmp) / "data", n, args.height, args.width)
        sampler = ClusterUniformSampler(n, seed=0)
        sampler.set_labels(labels, 0)
        train_loader = make_loader(TorchImages(data), batch_size=args.batch_size, num_workers=args.num_workers,
                                   device=device, sampler=sampler, drop_last=True)
        feature_loader = make_loader(TorchImages(data), batch_size=2 * args.batch_size, num_workers=args.num_workers,
                                     device=device)

        def full_train():
            train_epoch(model, head, optimizers, train_loader, labels, augment, torch.Generator().manual_seed(0),
                        device, precision, epoch=0, checkpointer=None)

        def full_extract():
            extract_features(model, feature_loader, device, precision)

        batches = [torch.rand(args.batch_size, 1, args.height, args.width) for _ in range(min(args.steps, 8))]
        targets = torch.from_numpy(labels[:args.batch_size]).to(device)

        def bare_train():
            model.train()
            for step in range(args.steps):
                images = to_device_batch(batches[step % len(batches)], device)
                with precision.autocast():
                    loss = F.cross_entropy(head(model(images), targets).float(), targets)
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                precision.step(loss, optimizers)

        @torch.inference_mode()
        def bare_extract():
            model.eval()
            for step in range(args.steps // 2):
                images = torch.cat([batches[(2 * step) % len(batches)], batches[(2 * step + 1) % len(batches)]])
                with precision.autocast():
                    model(to_device_batch(images, device)).float().cpu()

        # warm-up, then full and bare timed in turn, so that both see the same machine load
        full_train(), full_extract(), bare_train(), bare_extract()
        train_full, extract_full, train_bare, extract_bare = [], [], [], []
        for _ in range(args.repeats):
            train_full.append(n / _timed(full_train, device))
            train_bare.append(n / _timed(bare_train, device))
            extract_full.append(n / _timed(full_extract, device))
            extract_bare.append(2 * (args.steps // 2) * args.batch_size / _timed(bare_extract, device))
    tf, tb = float(np.median(train_full)), float(np.median(train_bare))
    ef, eb = float(np.median(extract_full)), float(np.median(extract_bare))
    print(f"  training, full loop (memmap + sampler + SpecAugment): {tf:8.1f} images/s (median of {args.repeats})")
    print(f"  training, bare loop (random tensors in memory):       {tb:8.1f} images/s")
    print(f"  training ratio full / bare: {tf / tb:.3f}  (target >= 0.85)")
    print(f"  features, full (memmap DataLoader):                   {ef:8.1f} images/s")
    print(f"  features, bare (tensors in memory):                   {eb:8.1f} images/s")
    print(f"  features ratio full / bare: {ef / eb:.3f}  (target >= 0.9)")
    args.rates = {"train": tf, "extract": ef}


def clustering_share(args: argparse.Namespace) -> None:
    """Post-processing + k-means + metrics of N embeddings, against the epoch those rates imply."""
    from nscnet.config import NscnetConfig
    from nscnet.clustering.evaluate import cluster_features, score

    rng = np.random.default_rng(0)
    # embeddings with cluster structure (LeakyReLU outputs of a trained net are far from uniform)
    centres = rng.normal(size=(args.k, 512)).astype(np.float32)
    features = centres[rng.integers(0, args.k, args.share_n)] + 0.5 * rng.normal(size=(args.share_n, 512)).astype(np.float32)
    cfg = NscnetConfig(k=args.k)
    start = time.perf_counter()
    _, processed, result = cluster_features(features, cfg)
    score(processed, result, cfg)
    seconds = time.perf_counter() - start
    rates = getattr(args, "rates", None)
    print(f"clustering of N={args.share_n} embeddings (PCA 256 + L2 + k-means K={args.k}, n_init {cfg.n_init}, "
          f"+ silhouette on <= {cfg.silhouette_sample}): {seconds:.2f} s")
    if rates:
        epoch = args.share_n / rates["extract"] + seconds + args.share_n / rates["train"]
        print(f"  epoch at the measured rates: {epoch:.1f} s; clustering share {100 * seconds / epoch:.1f}% "
              f"(target < 10%)")


def memory_child(args: argparse.Namespace) -> None:
    from nscnet.config import NscnetConfig
    from nscnet.models.nscnet import run_nscnet

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["NSCNET_FIGURE_PNG"] = "false"
        os.environ["NSCNET_RUNS_DIR"] = f"{tmp}/checkpoints"
        if args.child_data:
            data = Path(args.child_data).resolve()
        else:
            data = random_dataset(Path(tmp) / "data", args.child, args.memory_height, args.memory_width)
        n = int(np.load(data / "spectrograms.npy", mmap_mode="r").shape[0])
        peak: dict = {}
        stop = threading.Event()
        sampler = threading.Thread(target=_peak_memory, args=(stop, peak), daemon=True)
        sampler.start()
        start = time.perf_counter()
        run_nscnet(NscnetConfig(data=str(data), epochs=1, k=args.k, batch_size=args.batch_size,
                                backbone=args.memory_backbone, num_workers=args.num_workers, export=False,
                                device=args.device))
        stop.set()
        sampler.join()
        shape = np.load(data / "spectrograms.npy", mmap_mode="r").shape
        print(json.dumps({"n": n, "dataset_mb": n * shape[1] * shape[2] * 2 / 2**20,
                          "seconds": time.perf_counter() - start, **peak}))


def memory(args: argparse.Namespace) -> None:
    print(f"peak memory of a whole run_nscnet (1 epoch + final clustering), backbone {args.memory_backbone}, "
          f"num_workers {args.num_workers}, main process + workers:")
    runs = []
    if args.memory_data:
        shape = np.load(Path(args.memory_data) / "spectrograms.npy", mmap_mode="r").shape
        runs.append(["--child-data", args.memory_data])
        args.memory_height, args.memory_width = shape[1], shape[2]
        runs.append(["--child", str(4 * shape[0])])
    else:
        runs += [["--child", str(n)] for n in args.sizes]
    for extra in runs:
        run_memory_child(__file__, [*extra, "--num-workers", str(args.num_workers), "--memory-height",
                                    str(args.memory_height), "--memory-width", str(args.memory_width),
                                    "--batch-size", str(args.batch_size), "--device", args.device, "--k", str(args.k),
                                    "--memory-backbone", args.memory_backbone], " ".join(extra))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="batches per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs of each loop")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--share-n", type=int, default=7652, help="embeddings clustered in the share part")
    parser.add_argument("--memory-data", default="", help="dataset folder of the memory part (and 4x as many random images)")
    parser.add_argument("--sizes", default="2000,8000", help="random dataset sizes when no --memory-data ('' = skip)")
    parser.add_argument("--memory-height", type=int, default=64)
    parser.add_argument("--memory-width", type=int, default=128)
    parser.add_argument("--memory-backbone", default="small_cnn", help="backbone of the memory runs")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-data", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child or args.child_data:
        memory_child(args)
        return
    if not args.skip_speed:
        speed(args, amp=True)
        if torch.cuda.is_available() and args.device != "cpu":
            speed(args, amp=False)  # the same without mixed precision
            speed(args, amp=True)   # again, so args.rates (for the share) are those with AMP
    clustering_share(args)
    if not args.skip_memory:
        memory(args)


if __name__ == "__main__":
    main()
