"""The dataset directory written by `preprocess` and read by every model.

Layout:
- `spectrograms.npy`: float16 images, shape (n_ok, height, width), values in [0, 1]; row i is
  the i-th segment whose status is `ok`; memory-mapped on read, never loaded whole;
- `segments.csv`: one row per labelled segment, skipped ones included:
  `segment_id, recording, channel, onset_s, offset_s, duration_s, label, status, row`
  (`status` is `ok` or the reason it was skipped; `row` indexes spectrograms.npy, -1 if skipped);
- `preprocess.json`: the preprocessing parameters, input fingerprint and content hash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nscnet.config import DataError

IMAGES = "spectrograms.npy"
SEGMENTS = "segments.csv"
META = "preprocess.json"
SEGMENT_COLUMNS = ["segment_id", "recording", "channel", "onset_s", "offset_s", "duration_s", "label", "status", "row"]


@dataclass
class Dataset:
    """A dataset directory opened for reading.

    images: memmap (N, height, width) float16 of the ok segments.
    segments: DataFrame of the ok segments, in image-row order (index 0..N-1).
    all_segments: DataFrame of every segment, skipped ones included.
    meta: the contents of preprocess.json.
    """

    path: Path
    images: np.ndarray
    segments: pd.DataFrame
    all_segments: pd.DataFrame
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def pad(self) -> str | None:
        """Where `preprocess` put the padding of each cut ("end", "center", "start"; None: not a
        preprocessed dataset, e.g. `synth --images`)."""
        return self.meta.get("params", {}).get("pad")

    def truth(self) -> np.ndarray:
        """Reference label text of each ok segment (for scoring only); DataError when absent."""
        labels = self.segments["label"]
        if labels.isna().all() or (labels.astype(str).str.strip() == "").all():
            raise DataError(f"--truth: the segments of {self.path} carry no reference labels")
        return labels.fillna("").astype(str).to_numpy()

    def flat(self, dtype: Any = np.float32, chunk: int = 2048) -> np.ndarray:
        """All images flattened to (N, height * width), converted chunk by chunk."""
        out = np.empty((len(self), self.images.shape[1] * self.images.shape[2]), dtype=dtype)
        for start in range(0, len(self), chunk):
            block = self.images[start:start + chunk]
            out[start:start + len(block)] = block.reshape(len(block), -1)
        return out


def read_dataset(path: str | Path) -> Dataset:
    """Open a dataset directory; DataError naming what is missing or inconsistent."""
    path = Path(path)
    for name in (IMAGES, SEGMENTS):
        if not (path / name).is_file():
            raise DataError(f"{path} is not a dataset folder: {name} is missing (run `nscnet preprocess` first)")
    images = np.load(path / IMAGES, mmap_mode="r")
    if images.ndim != 3:
        raise DataError(f"{path / IMAGES} has shape {images.shape}, expected (N, height, width)")
    all_segments = pd.read_csv(path / SEGMENTS, dtype={"label": str, "recording": str, "segment_id": str},
                               keep_default_na=False)
    for column in ("onset_s", "offset_s", "duration_s"):  # unparseable label lines leave these empty
        if column in all_segments:
            all_segments[column] = pd.to_numeric(all_segments[column], errors="coerce")
    ok = all_segments[all_segments["status"] == "ok"].sort_values("row").reset_index(drop=True)
    if len(ok) != images.shape[0]:
        raise DataError(f"{path}: {len(ok)} ok segments in {SEGMENTS} but {images.shape[0]} images in {IMAGES}")
    if len(ok) == 0:
        raise DataError(f"{path}: the dataset holds no usable segment (see the status column of {SEGMENTS})")
    meta = json.loads((path / META).read_text()) if (path / META).is_file() else {}
    return Dataset(path=path, images=images, segments=ok, all_segments=all_segments, meta=meta)


def open_image_writer(path: str | Path, n_rows: int, height: int, width: int) -> np.memmap:
    """A float16 .npy memmap of (n_rows, height, width) to stream images into."""
    return np.lib.format.open_memmap(str(path), mode="w+", dtype=np.float16, shape=(n_rows, height, width))


def shrink_npy(path: str | Path, n_rows: int) -> None:
    """Cut a C-ordered .npy file down to its first `n_rows` rows in place (no copy in RAM).

    Used when skipped segments leave the tail of a pre-allocated memmap unused.
    """
    path = Path(path)
    with open(path, "r+b") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        header_len = fh.tell()
        if fortran:
            raise ValueError("shrink_npy handles C-ordered arrays only")
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        new_shape = (n_rows, *shape[1:])
        # the header dict, space-padded to the old header's length (a shorter shape only shrinks it)
        prefix = 10 if version == (1, 0) else 12
        text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": new_shape})
        body = text.ljust(header_len - prefix - 1) + "\n"
        if len(body) != header_len - prefix:
            raise ValueError("npy header length changed while shrinking")
        fh.seek(prefix)
        fh.write(body.encode("latin1"))
        fh.truncate(header_len + row_bytes * n_rows)


class TorchImages:
    """A torch-style map dataset over the memmap: item i -> (float32 tensor (1, H, W), i).

    Opens the memmap lazily in each DataLoader worker so workers never copy the array.
    """

    def __init__(self, path: str | Path, indices: np.ndarray | None = None):
        self.path = Path(path)
        shape = np.load(self.path / IMAGES, mmap_mode="r").shape
        self.indices = np.arange(shape[0]) if indices is None else np.asarray(indices)
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int):
        import torch

        if self._images is None:
            self._images = np.load(self.path / IMAGES, mmap_mode="r")
        index = int(self.indices[item])
        image = torch.from_numpy(np.asarray(self._images[index], dtype=np.float32))
        return image.unsqueeze(0), index
