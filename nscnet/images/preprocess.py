"""`nscnet preprocess`: cut labelled segments out of recordings and write the image dataset.

`preprocess(cfg)` is pure of MLflow: it matches tracks to recordings, cuts, filters, pads or
crops every segment and encodes it as an image, streaming the images into the float16 memmap
`spectrograms.npy` (memory does not grow with the number of segments), and writes
`segments.csv` (every segment, skipped ones with their reason) and `preprocess.json` (every
parameter and a content hash of inputs + parameters). A second call with the same inputs and
parameters finds the hash and reuses the dataset. `run_preprocess(cfg)` wraps it in an MLflow
run and logs the segment statistics and figures.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import csv
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from nscnet.audio.features import encode, fit_duration, hop_length_for, warm_up
from nscnet.audio.labels import Inventory, Track, collect
from nscnet.audio.segments import cut_track
from nscnet.config import DataError, PreprocessConfig, to_params
from nscnet.images.dataset import IMAGES, META, SEGMENT_COLUMNS, SEGMENTS, open_image_writer, shrink_npy
from nscnet.runs.locks import exclusive

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# parameters that do not change the dataset's content, so they stay out of the hash
UNHASHED = ("experiment", "out", "workers", "force")
COLUMNS = SEGMENT_COLUMNS + ["cropped", "detail", "line", "track"]
FLUSH_ROWS = 256  # the memmap is flushed and re-opened every this many images: bounded RSS


@dataclass
class PreprocessResult:
    """What one `preprocess` call produced (or found in the cache)."""

    path: Path
    cached: bool
    content_hash: str
    n_segments: int
    n_ok: int
    skipped: dict[str, int]
    stats: dict[str, float]
    seconds: float
    recordings_without_track: list[str] = field(default_factory=list)
    tracks_without_recording: list[str] = field(default_factory=list)
    first_problem: str = ""

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line: ok / skipped by reason, where, and whether it came from the cache."""
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]))
        skipped = f"{self.n_skipped} skipped ({reasons})" if self.n_skipped else "0 skipped"
        extra = []
        if self.recordings_without_track:
            extra.append(f"{len(self.recordings_without_track)} recording(s) without track")
        if self.tracks_without_recording:
            extra.append(f"{len(self.tracks_without_recording)} track(s) without recording")
        tail = f"; {', '.join(extra)}" if extra else ""
        origin = "reused cached dataset" if self.cached else f"{self.seconds:.1f} s"
        return f"preprocess: {self.n_ok} ok, {skipped}{tail} -> {self.path} ({origin})"


# ------------------------------------------------------------------------- fingerprint

def _digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "blake2b").hexdigest()[:32]


def fingerprint(inventory: Inventory, audio: Path, labels: Path, previous: dict | None = None) -> list[dict]:
    """Content digest of every input file, reusing the previous digest when size and mtime agree."""
    known = {item["file"]: item for item in (previous or {}).get("inputs", [])}
    files: dict[str, Path] = {}
    for track in inventory.tracks:
        files[f"labels/{track.source.relative_to(labels) if labels.is_dir() else track.source.name}"] = track.source
        if track.recording is not None:
            files[f"audio/{track.recording.relative_to(audio)}"] = track.recording
    for path in inventory.recordings_without_track:
        files[f"audio/{path.relative_to(audio)}"] = path
    out = []
    for name, path in sorted(files.items()):
        stat = path.stat()
        old = known.get(name)
        if old and old["size"] == stat.st_size and old["mtime_ns"] == stat.st_mtime_ns:
            digest = old["digest"]
        else:
            digest = _digest(path)
        out.append({"file": name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "digest": digest})
    return out


def content_hash(cfg: PreprocessConfig, inputs: list[dict]) -> str:
    """sha256 over the format version, the content-relevant parameters and the input digests."""
    params = {k: v for k, v in to_params(cfg).items() if k not in UNHASHED}
    payload = {"version": FORMAT_VERSION, "params": params, "inputs": [(i["file"], i["digest"]) for i in inputs]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _read_meta(out: Path) -> dict | None:
    try:
        return json.loads((out / META).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------- the work

def process_track(track: Track, cfg: PreprocessConfig) -> list[tuple[dict[str, Any], np.ndarray | None]]:
    """All segments of one recording: (row, image (n_mels, frames) float16 or None when skipped)."""
    n_samples = int(round(cfg.duration_s * cfg.sample_rate))
    results = []
    for row, y in cut_track(track, sample_rate=cfg.sample_rate, channel=cfg.channel,
                            highpass_hz=cfg.highpass_hz, highpass_order=cfg.highpass_order):
        row["cropped"] = False
        if row["status"] != "ok":
            results.append((row, None))
            continue
        try:
            fixed, row["cropped"] = fit_duration(y, n_samples=n_samples, pad=cfg.pad)
            image = encode(fixed, sr=cfg.sample_rate, encoding=cfg.encoding, height=cfg.n_mels, frames=cfg.frames,
                           n_fft=cfg.n_fft, fmin=cfg.fmin, fmax=cfg.fmax, top_db=cfg.top_db)
        except Exception as exc:  # one bad segment never aborts the rest
            row.update(status="error", detail=f"{type(exc).__name__}: {exc}")
            results.append((row, None))
            continue
        results.append((row, image.astype(np.float16)))
    return results


def _init_worker() -> None:
    # each worker process is one core's worth of work: no nested BLAS threads
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _ordered_results(tracks: list[Track], cfg: PreprocessConfig):
    """Yield process_track(track) in track order; with workers > 1, a bounded window in parallel."""
    if cfg.workers <= 1:
        from threadpoolctl import threadpool_limits

        # per-segment matrices are tiny: threaded BLAS only adds contention (10x slower under load)
        with threadpool_limits(1):
            for track in tracks:
                yield process_track(track, cfg)
        return
    warm_up(sr=cfg.sample_rate, n_fft=cfg.n_fft)  # compile numba kernels once, before the workers
    with cf.ProcessPoolExecutor(max_workers=cfg.workers, initializer=_init_worker) as pool:
        window: collections.deque = collections.deque()
        pending = iter(tracks)
        for track in pending:
            window.append(pool.submit(process_track, track, cfg))
            if len(window) >= 2 * cfg.workers:
                break
        while window:
            results = window.popleft().result()
            nxt = next(pending, None)
            if nxt is not None:
                window.append(pool.submit(process_track, nxt, cfg))
            yield results


class _ImageSink:
    """Streams images into the .npy memmap, re-mapping it every FLUSH_ROWS rows so that the
    written pages leave this process's resident memory."""

    def __init__(self, path: Path, n_rows: int, height: int, width: int):
        self.path = path
        self.images = open_image_writer(path, max(n_rows, 1), height, width)
        self.n = 0

    def write(self, image: np.ndarray) -> int:
        self.images[self.n] = image
        self.n += 1
        if self.n % FLUSH_ROWS == 0:
            self.images.flush()
            del self.images
            self.images = np.load(self.path, mmap_mode="r+")
        return self.n - 1

    def close(self) -> None:
        self.images.flush()
        del self.images
        shrink_npy(self.path, self.n)


def _stats(durations: list[float], cropped: int) -> dict[str, float]:
    if not durations:
        return {}
    d = np.asarray(durations)
    return {"duration_mean": float(d.mean()), "duration_median": float(np.median(d)),
            "duration_p97": float(np.percentile(d, 97)), "duration_min": float(d.min()),
            "duration_max": float(d.max()), "cropped_share": cropped / len(d)}


def _from_meta(out: Path, meta: dict) -> PreprocessResult:
    counts = meta["counts"]
    return PreprocessResult(path=out, cached=True, content_hash=meta["content_hash"], n_segments=counts["segments"],
                            n_ok=counts["ok"], skipped=counts["skipped"], stats=meta.get("stats", {}),
                            seconds=0.0, recordings_without_track=meta.get("recordings_without_track", []),
                            tracks_without_recording=meta.get("tracks_without_recording", []),
                            first_problem=meta.get("first_problem", ""))


def preprocess(cfg: PreprocessConfig) -> PreprocessResult:
    """Write (or reuse) the dataset folder `cfg.out`; see the module docstring."""
    start = time.perf_counter()
    audio = Path(cfg.audio)
    labels = Path(cfg.labels) if cfg.labels else audio
    out = Path(cfg.out)
    inventory = collect(audio, labels, cfg.label_format)
    if not inventory.tracks:
        raise DataError(f"no label tracks found in {labels} (expected <recording stem>.txt Audacity or "
                        f"Raven tracks, or a CSV) for the recordings in {audio}")
    # one writer per dataset folder: a second run waits here (then usually finds the dataset made)
    with exclusive(out, what="dataset folder"):
        return _write_or_reuse(cfg, inventory, audio, labels, out, start)


def _write_or_reuse(cfg: PreprocessConfig, inventory: Inventory, audio: Path, labels: Path, out: Path,
                    start: float) -> PreprocessResult:
    previous = _read_meta(out)
    inputs = fingerprint(inventory, audio, labels, previous)
    digest = content_hash(cfg, inputs)
    if (not cfg.force and previous and previous.get("content_hash") == digest and previous.get("complete")
            and (out / IMAGES).is_file() and (out / SEGMENTS).is_file()):
        result = _from_meta(out, previous)
        log.info("reusing cached dataset %s (hash %s): same inputs and parameters", out, digest[:12])
        return result

    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)  # an interrupted run must never look complete
    tmp_images, tmp_segments = out / f"{IMAGES}.partial", out / f"{SEGMENTS}.partial"
    sink = _ImageSink(tmp_images, inventory.n_lines, cfg.n_mels, cfg.frames)
    skipped: collections.Counter = collections.Counter()
    durations: list[float] = []
    cropped, n_segments, first_problem = 0, 0, ""
    with open(tmp_segments, "w", newline="") as fh, tqdm(total=inventory.n_lines, unit="seg",
                                                         desc="preprocess", mininterval=1.0) as bar:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for results in _ordered_results(inventory.tracks, cfg):
            for row, image in results:
                n_segments += 1
                if image is None:
                    row["row"] = -1
                    skipped[row["status"]] += 1
                    first_problem = first_problem or row["detail"]
                else:
                    row["row"] = sink.write(image)
                    durations.append(row["duration_s"])
                    cropped += bool(row["cropped"])
                writer.writerow(row)
            bar.update(len(results))
    sink.close()
    os.replace(tmp_images, out / IMAGES)
    os.replace(tmp_segments, out / SEGMENTS)
    seconds = time.perf_counter() - start
    result = PreprocessResult(
        path=out, cached=False, content_hash=digest, n_segments=n_segments, n_ok=sink.n, skipped=dict(skipped),
        stats=_stats(durations, cropped), seconds=seconds,
        recordings_without_track=[p.name for p in inventory.recordings_without_track],
        tracks_without_recording=[t.source.name if t.source.suffix.lower() != ".csv" else f"{t.source.name}:{t.stem}"
                                  for t in inventory.tracks_without_recording],
        first_problem=first_problem)
    meta = {
        "complete": True, "version": FORMAT_VERSION, "content_hash": digest, "params": to_params(cfg),
        "hashed_params": [k for k in to_params(cfg) if k not in UNHASHED],
        "image_shape": [cfg.n_mels, cfg.frames], "encoding": cfg.encoding,
        "hop_length": hop_length_for(int(round(cfg.duration_s * cfg.sample_rate)), cfg.frames),
        "counts": {"segments": n_segments, "ok": sink.n, "skipped": dict(skipped)},
        "stats": result.stats, "seconds": seconds,
        "segments_per_second": n_segments / seconds if seconds > 0 else None,
        "recordings_without_track": result.recordings_without_track,
        "tracks_without_recording": result.tracks_without_recording,
        "first_problem": first_problem, "inputs": inputs,
    }
    (out / f"{META}.partial").write_text(json.dumps(meta, indent=1, default=str))
    os.replace(out / f"{META}.partial", out / META)
    return result


# ------------------------------------------------------------------------------ the run

def duration_figures(durations: np.ndarray, duration_s: float) -> dict[str, Any]:
    """Plotly boxplot and histogram of segment durations (s), the chosen `duration_s` marked."""
    import plotly.graph_objects as go

    box = go.Figure(go.Box(x=durations, name="segments", boxpoints="outliers", marker_color="#1f77b4"))
    histogram = go.Figure(go.Histogram(x=durations, nbinsx=60, marker_color="#1f77b4"))
    for fig, title in ((box, "Segment durations"), (histogram, "Segment duration histogram")):
        fig.add_vline(x=duration_s, line_dash="dash", line_color="firebrick",
                      annotation_text=f"duration_s = {duration_s:g} s (longer ones are cropped)")
        fig.update_layout(title=title, xaxis_title="duration (s)", template="plotly_white")
    histogram.update_layout(yaxis_title="segments")
    return {"duration_boxplot": box, "duration_histogram": histogram}


def run_preprocess(cfg: PreprocessConfig) -> dict[str, Any]:
    """The `preprocess` entry point: one MLflow run with counts, duration statistics, figures
    and the dataset's small files (segments.csv, preprocess.json) as artifacts."""
    import pandas as pd

    from nscnet.runs import tracking

    with tracking.start_run(cfg, "preprocess") as run:
        result = preprocess(cfg)
        metrics: dict[str, Any] = {
            "segments": result.n_segments, "segments_ok": result.n_ok, "segments_skipped": result.n_skipped,
            "recordings_without_track": len(result.recordings_without_track),
            "tracks_without_recording": len(result.tracks_without_recording),
            "cached": int(result.cached), **result.stats,
            **{f"skipped_{reason}": n for reason, n in result.skipped.items()},
        }
        if not result.cached and result.seconds > 0:
            metrics["segments_per_second"] = result.n_segments / result.seconds
            metrics["preprocess_seconds"] = result.seconds
        tracking.log_metrics(metrics)
        tracking.set_tags({"nscnet.dataset": str(result.path.resolve()), "nscnet.content_hash": result.content_hash,
                           "nscnet.cached": str(result.cached).lower()})
        segments = pd.read_csv(result.path / SEGMENTS, usecols=["status", "duration_s"])
        durations = segments.loc[segments["status"] == "ok", "duration_s"].to_numpy(dtype=float)
        if len(durations):
            for name, fig in duration_figures(durations, cfg.duration_s).items():
                tracking.log_figure(fig, name)
        for name in (SEGMENTS, META):
            tracking.log_artifact(result.path / name, "dataset")
        print(result.summary(), flush=True)
        if result.n_ok == 0:
            raise DataError(f"no usable segment in {cfg.audio} (all {result.n_segments} skipped); "
                            f"first problem: {result.first_problem}")
    return {"run_id": run.info.run_id, "dataset": str(result.path), "segments_ok": result.n_ok,
            "skipped": result.skipped, "cached": result.cached, "content_hash": result.content_hash}
