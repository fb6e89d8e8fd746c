"""VAENet training speed and memory: prints its figures, asserts nothing.

1. Speed: training images per second of the full loop (`nscnet.models.vaenet.train_epoch`
   over the memmap DataLoader, as `run_vaenet` runs it) against a bare loop of the same model,
   loss and optimizer on random tensors already in memory. Target: ratio >= 0.85.
2. Memory: peak memory of a whole `run_vaenet` (1 epoch, then encoding and clustering every
   segment) on datasets of two sizes, each in a fresh process, main process + DataLoader
   workers summed as PSS (shared pages split, not counted per worker). Anonymous memory
   (what the processes allocate) should not grow with the dataset; file-backed pages (the
   memmap, libraries) are page cache the kernel can drop, reported apart.

    python benchmarks/vaenet_epoch.py                      # 64 x 512, defaults
    python benchmarks/vaenet_epoch.py --steps 10 --threads 2 --sizes 2000,8000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("NSCNET_PROGRESS", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def random_dataset(path: Path, n: int, height: int, width: int, seed: int = 0) -> Path:
    """A dataset folder of n random images (written in chunks, never whole in memory)."""
    import pandas as pd

    from nscnet.images.dataset import IMAGES, SEGMENT_COLUMNS, SEGMENTS, open_image_writer

    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = open_image_writer(path / IMAGES, n, height, width)
    for start in range(0, n, 512):
        stop = min(n, start + 512)
        images[start:stop] = rng.random((stop - start, height, width), dtype=np.float32).astype(np.float16)
    images.flush()
    del images
    pd.DataFrame({"segment_id": [f"s{i}" for i in range(n)], "recording": "r.wav", "channel": 0,
                  "onset_s": 0.0, "offset_s": 1.0, "duration_s": 1.0, "label": "", "status": "ok",
                  "row": np.arange(n)})[SEGMENT_COLUMNS].to_csv(path / SEGMENTS, index=False)
    return path


def speed(args: argparse.Namespace) -> None:
    from nscnet.config import VaenetConfig
    from nscnet.images.dataset import TorchImages
    from nscnet.models.vaenet import EpochPermutation, build_model, train_epoch
    from nscnet.models.vae_model import vae_loss
    from nscnet.models.training import Precision, choose_device, make_loader, to_device_batch

    device = choose_device(args.device)
    precision = Precision(device, True)
    cfg = VaenetConfig(batch_size=args.batch_size, residual=args.residual)
    n = args.steps * args.batch_size
    print(f"device {device.type} ({precision.name}), torch threads {torch.get_num_threads()}, "
          f"images {args.height} x {args.width}, batch {args.batch_size}, {args.steps} steps, "
          f"num_workers {args.num_workers}, residual {args.residual}")

    def fresh():
        torch.manual_seed(0)
        model = build_model(cfg, (args.height, args.width)).to(device)
        return model, torch.optim.Adam(model.parameters(), lr=cfg.lr)

    with tempfile.TemporaryDirectory() as tmp:
        data = random_dataset(Path(tmp) / "data", n, args.height, args.width)
        loader = make_loader(TorchImages(data), batch_size=args.batch_size, num_workers=args.num_workers,
                             device=device, sampler=EpochPermutation(n, 0))
        model, optimizer = fresh()
        train_epoch(model, loader, optimizer, precision, device, beta=1.0, recon="bce", epoch=0)  # warm-up
        full = [train_epoch(model, loader, optimizer, precision, device, beta=1.0, recon="bce", epoch=e)
                ["images_per_second"] for e in range(1, 1 + args.repeats)]

    model, optimizer = fresh()
    batches = [torch.rand(args.batch_size, 1, args.height, args.width) for _ in range(min(args.steps, 8))]

    def bare_epoch() -> float:
        model.train()
        start = time.perf_counter()
        for step in range(args.steps):
            images = to_device_batch(batches[step % len(batches)], device)
            with precision.autocast():
                logits, mu, logvar = model(images)
            loss, _, _ = vae_loss(logits, images, mu, logvar)
            optimizer.zero_grad(set_to_none=True)
            precision.step(loss, [optimizer])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.steps * args.batch_size / (time.perf_counter() - start)

    bare_epoch()  # warm-up
    bare = [bare_epoch() for _ in range(args.repeats)]
    f, b = float(np.median(full)), float(np.median(bare))
    print(f"full loop (memmap DataLoader + train_epoch): {f:.1f} images/s (median of {args.repeats})")
    print(f"bare loop (random tensors in memory):        {b:.1f} images/s")
    print(f"ratio full / bare: {f / b:.3f}  (target >= 0.85)")


def _peak_memory(stop: threading.Event, peak: dict) -> None:
    """Sample the proportional set size (anonymous and file-backed) of this process and its
    DataLoader workers every 50 ms. PSS splits pages shared after fork between the processes,
    so the sum is what they really hold together (RSS would count the shared pages per worker)."""
    import psutil

    me = psutil.Process()
    while not stop.is_set():
        anon = file = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                rollup = Path(f"/proc/{proc.pid}/smaps_rollup").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in rollup.splitlines()[1:] if ":" in line)
            anon += int(fields.get("Pss_Anon", "0 kB").split()[0])
            file += int(fields.get("Pss_File", "0 kB").split()[0])
        peak["anon_mb"] = max(peak.get("anon_mb", 0), anon / 1024)
        peak["file_mb"] = max(peak.get("file_mb", 0), file / 1024)
        stop.wait(0.05)


def memory_child(args: argparse.Namespace) -> None:
    """One whole run_vaenet on a fresh dataset of args.child images; prints a JSON line."""
    from nscnet.config import VaenetConfig
    from nscnet.models.vaenet import run_vaenet

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["NSCNET_FIGURE_PNG"] = "false"
        data = random_dataset(Path(tmp) / "data", args.child, args.memory_height, args.memory_width)
        peak: dict = {}
        stop = threading.Event()
        sampler = threading.Thread(target=_peak_memory, args=(stop, peak), daemon=True)
        sampler.start()
        start = time.perf_counter()
        run_vaenet(VaenetConfig(data=str(data), epochs=1, batch_size=args.batch_size, k=8, pca_dim=16,
                                num_workers=args.num_workers, export=False, device=args.device,
                                filters=(16, 32, 64, 64, 64), dense_units=128, latent_dim=16))
        stop.set()
        sampler.join()
        dataset_mb = args.child * args.memory_height * args.memory_width * 2 / 2**20
        print(json.dumps({"n": args.child, "dataset_mb": dataset_mb, "seconds": time.perf_counter() - start, **peak}))


def run_memory_child(script: str, argv: list[str], label: str) -> None:
    """Run `script` with `argv` in a fresh process (one whole run, sampled by `_peak_memory`)
    and print its JSON result line; shared with benchmarks/nscnet_epoch.py."""
    out = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        print(f"  {label}: failed\n{out.stderr[-2000:]}")
        return
    r = json.loads(lines[-1])
    print(f"  N={r['n']:>6} ({r['dataset_mb']:.0f} MB of images): peak anonymous PSS {r['anon_mb']:.0f} MB, "
          f"peak file-backed PSS {r['file_mb']:.0f} MB, {r['seconds']:.1f} s")


def memory(args: argparse.Namespace) -> None:
    print(f"peak memory of a whole run_vaenet (1 epoch + encode + k-means), {args.memory_height} x "
          f"{args.memory_width} images, num_workers {args.num_workers}, main process + workers:")
    for n in args.sizes:
        run_memory_child(__file__, ["--child", str(n), "--num-workers", str(args.num_workers),
                                    "--memory-height", str(args.memory_height), "--memory-width", str(args.memory_width),
                                    "--batch-size", str(args.batch_size), "--device", args.device], f"N={n}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="batches per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs of each loop")
    parser.add_argument("--residual", action="store_true")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", default="2000,8000", help="dataset sizes of the memory part ('' = skip)")
    parser.add_argument("--memory-height", type=int, default=64)
    parser.add_argument("--memory-width", type=int, default=128)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        memory_child(args)
        return
    if not args.skip_speed:
        speed(args)
    if args.sizes:
        memory(args)


if __name__ == "__main__":
    main()
