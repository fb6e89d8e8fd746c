"""NSCNet on a GPU: training and feature throughput, the loop's overhead, k-means, memory.

    PYTHONPATH=. python benchmarks/gpu.py            # on a CUDA device: a few minutes
    PYTHONPATH=. python benchmarks/gpu.py --smoke    # every part on the CPU, tiny sizes (tests/test_gpu_bench.py)

Prints, on the device it finds (CUDA when present, else CPU):
1. training images/s of the NSCNet network (efficientnet_b0, 512-d embedding, softmax head
   over --k classes, Adam) on a batch already on the device, for fp32, bf16 autocast and fp16
   autocast with a GradScaler, each with and without channels-last and with and without
   torch.compile (compile time reported apart, not counted);
2. feature extraction images/s: `nscnet.models.nscnet.extract_features` through the real
   DataLoader (`nscnet.models.training.make_loader`: the float16 memmap, pinned memory and
   --workers workers on CUDA), with the run's precision (`training.Precision`);
3. the full training loop (`nscnet.models.nscnet.train_epoch`: cluster-uniform sampler,
   DataLoader from the memmap, SpecAugment, targets, NaN checks) against a bare loop of the same
   model, optimizers and batch size on a batch already on the device [target >= 0.9];
4. per-epoch k-means at K = --kmeans-k on (--kmeans-n, 128) features: `nscnet.clustering.kmeans_torch` on
   the device against faiss on the CPU (`nscnet.clustering.cluster.kmeans`, backend faiss), seconds and
   inertia [torch within 1% of faiss];
5. peak device memory of training at batch --batch, and the largest batch that fits (doubling
   from --batch until out of memory, up to --max-batch; on the CPU the peak is the process'
   RSS growth and the search stops at --max-batch).
The images are a synthetic dataset of --n segments (`nscnet.audio.synth.write_image_dataset`)
in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nscnet.models import training  # noqa: E402
from nscnet.models.arcface import make_head  # noqa: E402
from nscnet.models.backbones import Embedder  # noqa: E402

PRECISIONS = ("fp32", "bf16", "fp16")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Step:
    """One training step of (network, head, Adam) at a precision: fp32, bf16 autocast, or fp16
    autocast with a GradScaler (on the CPU too, where torch supports both autocasts)."""

    def __init__(self, args, device: torch.device, precision: str, channels_last: bool, compile_: bool):
        torch.manual_seed(0)
        self.device, self.precision = device, precision
        self.model = Embedder(args.backbone, embedding_dim=args.embedding_dim).to(device)
        self.head = make_head("softmax", args.embedding_dim, args.k).to(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.optimizers = [torch.optim.Adam(self.model.parameters(), lr=1e-4), torch.optim.Adam(self.head.parameters(), lr=1e-4)]
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.forward = self._forward
        if compile_:
            self.forward = torch.compile(self._forward, backend=args.compile_backend)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            logits = self.head(self.model(images), targets)
        return F.cross_entropy(logits.float(), targets)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        images = images.contiguous(memory_format=self.memory_format)
        loss = self.forward(images, targets)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            for opt in self.optimizers:
                opt.step()
        else:
            self.scaler.scale(loss).backward()
            for opt in self.optimizers:
                self.scaler.step(opt)
            self.scaler.update()
        return loss.detach()


def batch_on_device(args, device: torch.device, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand((batch, 1, args.height, args.width), generator=g).to(device)
    targets = torch.randint(0, args.k, (batch,), generator=g).to(device)
    return images, targets


def time_steps(step: Step, images: torch.Tensor, targets: torch.Tensor, steps: int, warmup: int) -> float:
    """Images/s of `steps` steps after `warmup` ones."""
    for _ in range(warmup):
        step(images, targets)
    sync(step.device)
    started = time.perf_counter()
    for _ in range(steps):
        loss = step(images, targets)
    float(loss)  # waits for the device
    return steps * len(images) / (time.perf_counter() - started)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def part_training(args, device: torch.device) -> None:
    print(f"1. training images/s ({args.backbone}, batch {args.batch}, {args.height} x {args.width}, k {args.k}; "
          f"{args.steps} steps after {args.warmup}; compile backend {args.compile_backend})", flush=True)
    images, targets = batch_on_device(args, device, args.batch)
    results = {}
    for precision in PRECISIONS:
        for channels_last in (False, True):
            for compile_ in (False, True):
                started = time.perf_counter()
                try:
                    step = Step(args, device, precision, channels_last, compile_)
                    step(images, targets)  # compiles when compile_
                    sync(device)
                    first = time.perf_counter() - started
                    rate = time_steps(step, images, targets, args.steps, args.warmup)
                except Exception as exc:  # an unsupported combination on this device: say which, go on
                    print(f"   {precision:>4} channels_last={channels_last!s:<5} compile={compile_!s:<5}: "
                          f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}", flush=True)
                    continue
                results[precision, channels_last, compile_] = rate
                print(f"   {precision:>4} channels_last={channels_last!s:<5} compile={compile_!s:<5}: "
                      f"{rate:9.1f} images/s  (first step incl. compile {first:.1f} s)", flush=True)
    if results:
        (p, c, k), rate = max(results.items(), key=lambda item: item[1])
        base = results.get(("fp32", False, False))
        print(f"   fastest: {p} channels_last={c} compile={k}: {rate:.1f} images/s"
              + (f" = {rate / base:.2f}x plain fp32" if base else ""), flush=True)


def make_data(args, folder: Path) -> Path:
    from nscnet.audio.synth import write_image_dataset

    return write_image_dataset(folder / "dataset", args.n, types=min(64, args.n), height=args.height,
                               frames=args.width, seed=0)


def part_features_and_loop(args, device: torch.device, data: Path) -> None:
    from nscnet.images.dataset import TorchImages
    from nscnet.models.nscnet import extract_features, prepare_model, train_epoch
    from nscnet.models.sampler import ClusterUniformSampler
    from nscnet.models.specaugment import SpecAugment

    precision = training.Precision(device, True)  # what an NSCNet run uses (amp=true): bf16 or fp16+scaler on CUDA
    images = TorchImages(data)
    torch.manual_seed(0)
    model = prepare_model(Embedder(args.backbone, embedding_dim=args.embedding_dim), device)
    loader = training.make_loader(images, batch_size=2 * args.batch, num_workers=args.workers, device=device)
    extract_features(model, loader, device, precision)  # warm-up: workers start, cudnn picks its kernels
    sync(device)
    started = time.perf_counter()
    extract_features(model, loader, device, precision)
    sync(device)
    rate = len(images) / (time.perf_counter() - started)
    print(f"2. feature extraction through the DataLoader ({args.workers} workers, pin_memory="
          f"{loader.pin_memory}, precision {precision.name}): {rate:.1f} images/s over {len(images)} images", flush=True)

    head = make_head("softmax", args.embedding_dim, args.k).to(device)
    optimizers = [torch.optim.Adam(model.parameters(), lr=1e-4), torch.optim.Adam(head.parameters(), lr=1e-4)]
    labels = np.random.default_rng(0).integers(0, args.k, size=len(images))
    sampler = ClusterUniformSampler(len(images), seed=0)
    sampler.set_labels(labels, 0)
    train_loader = training.make_loader(images, batch_size=args.batch, num_workers=args.workers, device=device,
                                        sampler=sampler, seed=0, drop_last=True)
    augment = SpecAugment()
    generator = torch.Generator().manual_seed(0)
    train_epoch(model, head, optimizers, train_loader, labels, augment, generator, device, precision,
                epoch=0, checkpointer=None)  # warm-up epoch
    sync(device)
    started = time.perf_counter()
    _, seen = train_epoch(model, head, optimizers, train_loader, labels, augment, generator, device, precision,
                          epoch=1, checkpointer=None)
    sync(device)
    full = seen / (time.perf_counter() - started)

    x, targets = batch_on_device(args, device, args.batch)
    x = training.to_device_batch(x, device)
    model.train()
    head.train()

    def bare_step():
        with precision.autocast():
            loss = F.cross_entropy(head(model(x), targets).float(), targets)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        precision.step(loss, optimizers)
        return loss.detach()

    steps = max(len(train_loader), 2)
    for _ in range(min(steps, args.warmup + 1)):
        bare_step()
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        loss = bare_step()
    float(loss)
    bare = steps * args.batch / (time.perf_counter() - started)
    print(f"3. full training loop (train_epoch: sampler, DataLoader from the memmap, SpecAugment) {full:.1f} "
          f"images/s against a bare loop {bare:.1f} images/s = {full / bare:.2f}  [target >= 0.9]", flush=True)


def part_kmeans(args, device: torch.device) -> None:
    from nscnet.clustering.cluster import _faiss, free_cores, kmeans
    from nscnet.clustering.kmeans_torch import kmeans_torch

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.kmeans_k // 2, 128)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), size=args.kmeans_n)] + 0.5 * rng.normal(size=(args.kmeans_n, 128)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # L2-normalised, as NSCNet's post-processing leaves them
    tensor = torch.from_numpy(x).to(device)
    sync(device)
    started = time.perf_counter()
    ours = kmeans_torch(tensor, args.kmeans_k, n_init=1, seed=0)
    sync(device)
    torch_seconds = time.perf_counter() - started
    backend = "faiss" if _faiss() is not None else "sklearn"
    started = time.perf_counter()
    theirs = kmeans(x, args.kmeans_k, n_init=1, seed=0, backend=backend)
    cpu_seconds = time.perf_counter() - started
    print(f"4. k-means K={args.kmeans_k} on {args.kmeans_n} x 128 (n_init 1): torch on {device.type} "
          f"{torch_seconds:.2f} s, {backend} on the CPU ({free_cores()} threads of "
          f"{os.cpu_count()} CPUs) {cpu_seconds:.2f} s = {cpu_seconds / max(torch_seconds, 1e-9):.1f}x; inertia "
          f"torch / {backend} = {ours.inertia / theirs.inertia:.4f}  [within 1%]", flush=True)


def part_memory(args, device: torch.device) -> None:
    def peak(batch: int) -> float:
        step = Step(args, device, "bf16" if device.type == "cuda" else "fp32", device.type == "cuda", False)
        images, targets = batch_on_device(args, device, batch)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            before = 0.0
        else:
            before = rss_mb()
        for _ in range(2):
            step(images, targets)
        sync(device)
        value = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mb() - before
        del step, images, targets
        return value

    what = "peak allocated (bf16, channels-last)" if device.type == "cuda" else "RSS growth (fp32)"
    print(f"5. memory, {what}: batch {args.batch}: {peak(args.batch):.0f} MB", flush=True)
    batch, fits = args.batch, args.batch
    while batch * 2 <= args.max_batch:
        batch *= 2
        try:
            used = peak(batch)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            print(f"   batch {batch}: out of memory", flush=True)
            break
        fits = batch
        print(f"   batch {batch}: {used:.0f} MB", flush=True)
    limit = "out of memory above it" if fits < args.max_batch else f"--max-batch {args.max_batch} reached"
    print(f"   largest batch that fits: {fits} ({limit})", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on any device (the CPU test)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--embedding-dim", type=int, default=512)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--k", type=int, default=64, help="classes of the softmax head")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32768)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--n", type=int, default=16384, help="segments of the synthetic dataset (parts 2, 3)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--kmeans-n", type=int, default=100_000)
    parser.add_argument("--kmeans-k", type=int, default=2048)
    parser.add_argument("--compile-backend", default="inductor")
    args = parser.parse_args(argv)
    if args.smoke:  # every part, tiny: a CPU test in seconds (aot_eager: dynamo + AOT autograd, no C++ build)
        args.backbone, args.embedding_dim, args.height, args.width = "small_cnn", 32, 16, 64
        args.k, args.batch, args.max_batch, args.steps, args.warmup = 8, 4, 8, 2, 1
        args.n, args.workers, args.kmeans_n, args.kmeans_k = 48, 0, 600, 64
        if args.compile_backend == "inductor":
            args.compile_backend = "aot_eager"
    device = training.choose_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"# gpu benchmark on {device.type}: {name}; torch {torch.__version__}"
          + ("; SMOKE sizes (not a measurement)" if args.smoke else ""), flush=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    folder = Path(tempfile.mkdtemp(prefix="nscnet-gpu-"))
    try:
        part_training(args, device)
        data = make_data(args, folder)
        part_features_and_loop(args, device, data)
        part_kmeans(args, device)
        part_memory(args, device)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
