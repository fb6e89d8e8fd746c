"""Speed of the BASENet study on the Bengalese finch syllables, with one and two workers; prints:

- trials per minute with one worker and with two, over the grid phase (pca_dim 128/256 x K
  8..128; the K binary search that follows is sequential by nature) (target: two >= 1.6x one);
- tracking overhead per trial: the trial's wall time (ask -> tell) minus its model time
  (`cluster_seconds`: post-processing, clustering and scoring), split into the study machinery
  (Optuna storage, claims, tags) and the trial run's own MLflow logging (params, metrics,
  HTML figures, exports); target under 0.5 s against a local store.

    PYTHONPATH=. python benchmarks/study.py [--trials 10] [--work /tmp/nscnet-bench-study]

Each worker is a `python -m nscnet study` process with one BLAS thread, so two workers use
two cores. The dataset is preprocessed once into --work and reused on later runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENGALESE = ROOT.parent / "shared" / "data" / "bengalese-finch"


def dataset(work: Path) -> Path:
    from nscnet.config import PreprocessConfig
    from nscnet.images.preprocess import preprocess

    out = work / "bengalese-syllables"
    cfg = PreprocessConfig(audio=str(BENGALESE / "recordings"), labels=str(BENGALESE / "syllables"), out=str(out),
                           duration_s=0.3, sample_rate=32000, n_mels=64, frames=64, highpass_hz=500.0, workers=2)
    started = time.perf_counter()
    preprocess(cfg)
    print(f"dataset: {out} ready in {time.perf_counter() - started:.1f} s")
    return out


def run_workers(work: Path, data: Path, n_workers: int, trials: int) -> dict[str, float]:
    folder = work / f"workers-{n_workers}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    args = [sys.executable, "-m", "nscnet", "study", "--data", str(data), "--params", "k,pca_dim",
            "--k-min", "8", "--k-max", "128", "--n-trials", str(trials), "--storage", str(folder / "optuna.journal"),
            "--study-name", "bench", "--compare", "false", "--refine-k", "false",
            "--overrides", "n_init=3,kmeans_backend=faiss", "--threads", "1"]
    # grid phase only (--refine-k false): the binary search is sequential by nature, one trial at a time
    started = time.perf_counter()
    processes = [subprocess.Popen(args, cwd=folder, env=env, stdout=open(folder / f"w{i}.log", "wb"),
                                  stderr=subprocess.STDOUT) for i in range(n_workers)]
    for process in processes:
        process.wait()
    wall = time.perf_counter() - started
    if any(p.returncode for p in processes):
        raise SystemExit(f"a worker failed: see {folder}/w*.log")
    return measure(folder, wall)


def measure(folder: Path, wall: float) -> dict[str, float]:
    import mlflow
    import optuna
    from optuna.trial import TrialState

    from nscnet.studies.storage import open_storage

    study = optuna.load_study(study_name="bench", storage=open_storage(str(folder / "optuna.journal"), heartbeat_s=10))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    parents = runs[runs["tags.nscnet.step"] == "study"]
    busy = float(parents["metrics.worker_seconds"].max())  # first trial asked -> last told, slowest worker
    walls = [t.user_attrs["nscnet:wall_s"] for t in complete]
    models = [t.user_attrs["nscnet:model_s"] for t in complete]
    clusters = [t.user_attrs["cluster_seconds"] for t in complete]
    return {"trials": len(complete), "wall": wall, "busy": busy, "per_minute": 60 * len(complete) / busy,
            "trial_wall": statistics.median(walls), "cluster": statistics.median(clusters),
            "machinery": statistics.median(w - m for w, m in zip(walls, models)),
            "run_logging": statistics.median(m - c for m, c in zip(models, clusters)),
            "overhead": statistics.median(w - c for w, c in zip(walls, clusters))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10, help="at most 10: the grid (pca_dim 128/256 x K 8..128)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/nscnet-bench-study"))
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    data = dataset(args.work)
    results = {n: run_workers(args.work, data, n, args.trials) for n in (1, 2)}
    for n, r in results.items():
        print(f"{n} worker(s): {r['trials']} trials in {r['busy']:.1f} s of study time ({r['wall']:.1f} s with "
              f"process start-up): {r['per_minute']:.1f} trials/minute")
    print(f"speed-up with 2 workers: {results[2]['per_minute'] / results[1]['per_minute']:.2f}x (target >= 1.6x)")
    for n, r in results.items():
        print(f"per trial (median, {n} worker(s)): wall {r['trial_wall']:.3f} s, model (cluster_seconds) {r['cluster']:.3f} s, "
              f"tracking overhead {r['overhead']:.3f} s = study machinery {r['machinery']:.3f} s "
              f"+ the trial run's MLflow logging {r['run_logging']:.3f} s (target overhead < 0.5 s)")


if __name__ == "__main__":
    main()
