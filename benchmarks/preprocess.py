"""Preprocessing speed and memory; prints its figures (targets of issues 2 and 16 in brackets).

    PYTHONPATH=. python benchmarks/preprocess.py [--data ../shared/data/bengalese-finch] [--speed-only]

1. segments/s on the full Bengalese finch syllable set (duration_s 0.3, highpass 500 Hz,
   64 x 512 log-mel) with 1 and 2 workers, and their ratio [>= 1.8 on an idle machine, issue 16];
2. per-segment cost of preprocess (1 worker) against a bare `librosa.feature.melspectrogram`
   of the same cut and padded segments in the same process [<= 1.2x, issue 16];
3. peak RSS of a fresh process preprocessing the full set, and a synthetic set and the same
   set doubled [growth < 100 MB];
4. time of a repeated call served from the cache [< 2 s].
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "numba-cache"))


def peak_rss_mb(kind: str, **kwargs) -> tuple[float, int]:
    """Run one preprocess (or synth) in a fresh process; (its peak RSS in MB, segments ok)."""
    code = f"""
import json, resource, logging
logging.disable(logging.WARNING)
from nscnet.config import PreprocessConfig
from nscnet.images.preprocess import preprocess
r = preprocess(PreprocessConfig(**{kwargs!r}))
print(json.dumps({{"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "ok": r.n_ok}}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["rss"], result["ok"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "bengalese-finch"))
    parser.add_argument("--speed-only", action="store_true", help="parts 1 and 2 only (the issue 16 ratios)")
    args = parser.parse_args()
    os.environ["TQDM_DISABLE"] = "1"
    import logging

    logging.disable(logging.WARNING)
    import librosa
    from threadpoolctl import threadpool_limits

    from nscnet.audio.features import fit_duration, hop_length_for
    from nscnet.audio.segments import iter_segments
    from nscnet.audio.synth import write_synthetic
    from nscnet.config import PreprocessConfig, SynthConfig
    from nscnet.images.preprocess import preprocess

    data = Path(args.data)
    tmp = Path(tempfile.mkdtemp(prefix="nscnet-bench-"))
    base = dict(audio=str(data / "recordings"), labels=str(data / "syllables"), duration_s=0.3, highpass_hz=500.0)
    print(f"# preprocess benchmark: {data.name} syllables, duration_s 0.3, highpass 500 Hz, 64 x 512 log-mel; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    # 1. throughput, 1 and 2 workers
    rates = {}
    for workers in (1, 2):
        before = os.times()
        result = preprocess(PreprocessConfig(**base, out=str(tmp / f"w{workers}"), workers=workers, force=True))
        after = os.times()
        cpu = sum(after[i] - before[i] for i in range(4))  # user + system, this process and its workers
        rates[workers] = result.n_segments / result.seconds
        print(f"workers={workers}: {result.n_ok} ok segments in {result.seconds:.1f} s = "
              f"{rates[workers]:.0f} segments/s; CPU {cpu:.1f} s ({cpu / result.seconds:.2f} cores busy, "
              f"{cpu / result.n_segments * 1e3:.2f} CPU-ms per segment)")
    print(f"2 workers / 1 worker = {rates[2] / rates[1]:.2f}x  [target >= 1.8x; needs 2 idle cores: "
          f"load average now {os.getloadavg()[0]:.1f}]")

    # 2. per-segment cost against a bare melspectrogram of the same padded segments
    cfg = PreprocessConfig(**base, out=str(tmp / "w1"))
    n_samples = int(round(cfg.duration_s * cfg.sample_rate))
    hop = hop_length_for(n_samples, cfg.frames)
    segments = [fit_duration(y, n_samples=n_samples)[0] for _, y in
                iter_segments(cfg.audio, cfg.labels, sample_rate=cfg.sample_rate, highpass_hz=cfg.highpass_hz)]
    with threadpool_limits(1):  # as preprocess runs it
        start = time.perf_counter()
        for y in segments:
            librosa.feature.melspectrogram(y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=hop, n_mels=cfg.n_mels)
        bare = (time.perf_counter() - start) / len(segments)
    full = 1 / rates[1]
    print(f"per segment: preprocess {full * 1e3:.2f} ms, bare melspectrogram {bare * 1e3:.2f} ms = "
          f"{full / bare:.2f}x  [target <= 1.2x]")

    if args.speed_only:
        return
    # 3. peak RSS: full real set; a synthetic set and the same set doubled (recordings of equal length)
    rss_full, ok = peak_rss_mb("preprocess", **base, out=str(tmp / "rss-full"))
    print(f"peak RSS, full set ({ok} segments): {rss_full:.0f} MB")
    sizes = {}
    for factor in (1, 2):
        audio = tmp / f"synth{factor}"
        write_synthetic(SynthConfig(out=str(audio), songs=600 * factor, recordings=6 * factor, types=8))
        sizes[factor] = peak_rss_mb("preprocess", audio=str(audio), out=str(tmp / f"rss-synth{factor}"),
                                    duration_s=3.0)
        print(f"peak RSS, synthetic x{factor} ({sizes[factor][1]} segments, 64 x 512): {sizes[factor][0]:.0f} MB")
    print(f"RSS growth when doubling: {sizes[2][0] - sizes[1][0]:.0f} MB  [target < 100 MB]")

    # 4. a repeated call served from the cache
    start = time.perf_counter()
    again = preprocess(PreprocessConfig(**base, out=str(tmp / "w1")))
    print(f"repeated call: cached={again.cached} in {time.perf_counter() - start:.2f} s  [target < 2 s]")


if __name__ == "__main__":
    main()
