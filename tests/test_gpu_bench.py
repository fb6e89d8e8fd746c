"""benchmarks/gpu.py --smoke: every part of the GPU benchmark runs on the CPU (real torch, tiny
sizes), so it is known to work before a GPU is lent; and the archive-scale dataset writer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_every_part_on_cpu():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "gpu benchmark on cpu" in out and "SMOKE" in out
    # part 1: all 12 combinations of precision x channels-last x compile trained (none failed)
    rates = re.findall(r"^\s+(fp32|bf16|fp16) channels_last=(True|False)\s+compile=(True|False)\s*:\s+([\d.]+) images/s",
                       out, flags=re.M)
    assert len(rates) == 12 and all(float(r[3]) > 0 for r in rates), out
    assert "failed" not in out
    assert re.search(r"2\. feature extraction through the DataLoader .*: [\d.]+ images/s over 48 images", out)
    ratio = re.search(r"3\. full training loop .* = ([\d.]+)\s+\[target >= 0.9\]", out)
    assert ratio and float(ratio.group(1)) > 0
    inertia = re.search(r"4\. k-means K=64 .* inertia torch / faiss = ([\d.]+)", out)
    assert inertia and float(inertia.group(1)) <= 1.01, out
    assert re.search(r"largest batch that fits: 8 ", out)


def test_image_dataset_writer_makes_a_readable_dataset(tmp_path):
    from nscnet.audio.synth import song_templates, write_image_dataset
    from nscnet.images.dataset import read_dataset

    path = write_image_dataset(tmp_path / "ds", 120, types=4, chunk=50, seed=2)  # 64 x 512, as the benchmark
    dataset = read_dataset(path)
    assert len(dataset) == 120 and dataset.image_shape == (64, 512) and dataset.images.dtype == np.float16
    images = dataset.flat()
    assert images.min() >= 0 and images.max() <= 1
    truth = dataset.truth()
    assert set(truth) <= {"0", "1", "2", "3"} and (truth == "0").sum() > (truth == "3").sum()  # Zipf usage
    # each image is its type's template, jittered: the most similar template is its own type's
    templates = song_templates(4, seed=2).reshape(4, -1)

    def unit(x):
        x = x - x.mean(axis=1, keepdims=True)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    nearest = np.argmax(unit(images) @ unit(templates).T, axis=1)
    assert np.mean(nearest.astype(str) == truth) > 0.8
    again = write_image_dataset(tmp_path / "again", 120, types=4, chunk=32, seed=2)
    assert np.array_equal(np.load(again / "spectrograms.npy"), np.load(path / "spectrograms.npy"))  # chunk-free
