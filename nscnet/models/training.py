"""Training machinery shared by the deep models (NSCNet, VAENet).

- `choose_device`, `Precision` (bf16 autocast, or fp16 with a GradScaler, on CUDA only),
  `to_device_batch` (channels-last on CUDA), `seed_everything` (deterministic on CPU);
- `make_loader`: a DataLoader over `nscnet.images.dataset.TorchImages` (the memmap, never loaded
  whole), with seeded workers;
- checkpoints: `save_checkpoint` (atomic: tmp file + os.replace), `load_checkpoint`
  (`torch.load(..., weights_only=True)`), `Checkpointer` (a local run folder, each checkpoint
  also logged to the MLflow run), `resume_state` (download the checkpoint of an MLflow run id
  and check it belongs to the same step);
- `check_finite` (NaN/inf loss -> `NonFiniteLoss` naming the epoch and the kept checkpoint),
  `EarlyStopping` (patience, min_delta), `progress` (tqdm).

A typical loop (see `nscnet.models.nscnet.run_nscnet`):

    device = choose_device(cfg.device); precision = Precision(device, cfg.amp)
    with tracking.start_run(cfg, "nscnet", run_id=cfg.resume or None) as run:
        state = resume_state(cfg.resume, "nscnet") if cfg.resume else None
        ckpt = Checkpointer(run.info.run_id)
        for epoch in range(start, cfg.epochs):
            seed_everything(cfg.seed, epoch)
            ...
            ckpt.save({"epoch": epoch + 1, "model": model.state_dict(), ...})
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from nscnet.config import ConfigError, DataError
from nscnet.runs import tracking

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_DIR = "checkpoint"  # artifact folder of the MLflow run
CONFIG_FILE = "config.json"    # the run's full config, logged at the start (rebuilds it on resume)
RUNS_DIR_ENV = "NSCNET_RUNS_DIR"


class NonFiniteLoss(DataError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


# ------------------------------------------------------------------------- devices, seeds

def choose_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA when present, else CPU. `cuda` without a GPU is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but torch sees no CUDA GPU (use device=auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r} is not one of auto, cpu, cuda")
    return torch.device(name)


def seed_everything(seed: int, epoch: int = 0) -> None:
    """Seed python, numpy and torch from (seed, epoch).

    Seeding again at the start of every epoch makes an epoch's randomness depend only on the
    seed and the epoch number, so a resumed run repeats the epoch it was killed in exactly.
    """
    value = (int(seed) * 1_000_003 + int(epoch)) % (2**32)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def configure_threads(threads: int) -> None:
    """Use `threads` CPU threads in torch (0 keeps torch's default, one per core).

    Two torch processes that each use every core slow each other down many times over
    (docs/studies.md, threads): on a shared machine give each its share.
    """
    if threads > 0:
        torch.set_num_threads(int(threads))


def configure_cpu_determinism(device: torch.device) -> None:
    """Deterministic kernels where torch offers them (CPU runs are then bit-reproducible)."""
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class Precision:
    """Mixed precision on CUDA: bf16 autocast when supported, else fp16 with a GradScaler.

    On CPU (or with enabled=False) `autocast()` does nothing and `scaler` is None.
    """

    device: torch.device
    enabled: bool = True

    def __post_init__(self) -> None:
        self.enabled = bool(self.enabled) and self.device.type == "cuda"
        self.dtype = None
        self.scaler = None
        if self.enabled:
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            if self.dtype == torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")

    @property
    def name(self) -> str:
        return str(self.dtype).replace("torch.", "") if self.enabled else "float32"

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Backward pass and optimizer steps, through the GradScaler when there is one."""
        optimizers = list(optimizers)
        if self.scaler is None:
            loss.backward()
            for opt in optimizers:
                opt.step()
            return
        self.scaler.scale(loss).backward()
        for opt in optimizers:
            self.scaler.step(opt)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: Mapping) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(dict(state))


def to_device_batch(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(B, C, H, W) batch to the device; channels-last memory format on CUDA (faster convs)."""
    if device.type == "cuda":
        return images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    return images.to(device)


# ------------------------------------------------------------------------------ data loading

def _seed_worker(worker_id: int) -> None:
    # each worker's numpy/python RNG from torch's per-worker seed (itself from the loader's generator)
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_loader(dataset: Any, *, batch_size: int, num_workers: int, device: torch.device,
                sampler: Sampler | None = None, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader with seeded workers; workers persist across epochs, memory pinned on CUDA.

    `dataset` is typically `nscnet.images.dataset.TorchImages`, which opens the memmap lazily in
    each worker, so no worker copies the images.
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=shuffle if sampler is None else False,
        num_workers=num_workers, pin_memory=device.type == "cuda", drop_last=drop_last,
        worker_init_fn=_seed_worker, generator=generator,
        persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None,
    )


def progress(iterable: Iterable, *, desc: str, total: int | None = None, unit: str = "batch") -> Iterable:
    """A tqdm progress bar that disappears when done; on a terminal only (`nscnet.runs.console`)."""
    from nscnet.runs.console import bar

    return bar(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True, mininterval=1.0)


# ------------------------------------------------------------------------------ RNG states

def rng_state() -> dict:
    """Python, numpy and torch RNG states in a form `torch.load(weights_only=True)` accepts."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {"key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["key"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------ checkpoints

def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write `state` (tensors, numbers, strings, lists, dicts) atomically: tmp file + os.replace.

    A process killed while writing leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(dict(state), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Read a checkpoint with `weights_only=True` (no arbitrary code runs on load)."""
    try:
        return torch.load(Path(path), map_location=map_location, weights_only=True)
    except Exception as exc:
        raise DataError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0][:200]}") from None


def labels_to_tensor(labels: np.ndarray | None) -> torch.Tensor | None:
    return None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64))


def labels_from_tensor(labels: torch.Tensor | None) -> np.ndarray | None:
    return None if labels is None else labels.numpy().astype(np.int64)


def runs_dir() -> Path:
    """Local folder holding one sub-folder of checkpoints per run (`NSCNET_RUNS_DIR` or ./checkpoints)."""
    return Path(os.environ.get(RUNS_DIR_ENV, "checkpoints"))


class Checkpointer:
    """Saves the checkpoint of one run into `<runs_dir>/<run_id>/checkpoint.pt` and logs it
    to the MLflow run as `checkpoint/checkpoint.pt` (replacing the previous one).

    It holds the lock of the run's checkpoint folder (`nscnet.runs.locks`) while it lives, so one
    run is never trained by two processes at once (e.g. `--resume` typed in two terminals):
    the second stops with `locks.Busy` naming the first.
    """

    def __init__(self, run_id: str, *, log_to_mlflow: bool = True):
        from nscnet.runs.locks import Held

        self.run_id = run_id
        self.folder = runs_dir() / run_id
        self.path = self.folder / CHECKPOINT
        self.log_to_mlflow = log_to_mlflow
        self.last_epoch: int | None = None
        self._lock = Held(self.folder, what=f"run {run_id} (its checkpoint folder)", wait=False)

    def close(self) -> None:
        """Release the run's lock (also done when the object is collected or the process ends)."""
        self._lock.release()

    def __del__(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    def save(self, state: Mapping[str, Any]) -> Path:
        """`state` should hold at least `epoch` (epochs completed); RNG states are added."""
        full = {**state, "rng": rng_state()}
        save_checkpoint(self.path, full)
        if self.log_to_mlflow:
            # into the run's artifacts by copy and rename too: a process killed during the copy
            # must not leave a truncated checkpoint there for --resume to find
            with tracking.artifact_dir(CHECKPOINT_DIR) as folder:
                partial = folder / f"{CHECKPOINT}.partial"
                shutil.copyfile(self.path, partial)
                os.replace(partial, folder / CHECKPOINT)
        self.last_epoch = int(state.get("epoch", -1))
        return self.path

    def describe(self) -> str:
        if self.last_epoch is None:
            return "no checkpoint was written yet"
        return (f"the last good checkpoint ({self.last_epoch} epochs done) is kept in {self.path} "
                f"and in the run's artifacts (continue with --resume {self.run_id})")


def log_run_config(cfg: Any) -> None:
    """Log the full config as `config.json`: a resumed run rebuilds itself from it."""
    tracking.log_dict(asdict(cfg), CONFIG_FILE)


def resume_config(run_id: str, step: str, cfg_class: type, **keep: Any) -> Any:
    """The config an interrupted run started with, rebuilt from its `config.json` artifact.

    `keep` overrides fields the user may change on resume (device, num_workers, resume).
    DataError when the run does not exist or was made by another step.
    """
    run = tracking.get_run(run_id)
    made_by = run.data.tags.get("nscnet.step", "")
    if made_by != step:
        raise DataError(f"--resume {run_id}: that run was made by {made_by or 'another program'!r}, not {step!r}")
    if CONFIG_FILE not in tracking.list_artifacts(run_id):
        raise DataError(f"--resume {run_id}: the run stopped before it logged its {CONFIG_FILE}, so there is "
                        f"nothing to continue; start it again without --resume")
    path = tracking.download_artifact(run_id, CONFIG_FILE)
    values = json.loads(Path(path).read_text())
    for name, value in list(values.items()):
        if isinstance(value, list):
            values[name] = tuple(value)
    known = {f for f in cfg_class.__dataclass_fields__}
    values = {k: v for k, v in values.items() if k in known}
    values.update(keep)
    return cfg_class(**values)


def resume_state(run_id: str, map_location: Any = "cpu") -> dict | None:
    """The last checkpoint of an MLflow run, or None when the run was killed before its first."""
    names = tracking.list_artifacts(run_id, CHECKPOINT_DIR)
    if f"{CHECKPOINT_DIR}/{CHECKPOINT}" not in names:
        log.info("run %s has no checkpoint yet: starting it again from epoch 0", run_id)
        return None
    path = tracking.download_artifact(run_id, f"{CHECKPOINT_DIR}/{CHECKPOINT}")
    return load_checkpoint(path, map_location=map_location)


def check_finite(loss: float | torch.Tensor, *, epoch: int, batch: int, checkpointer: Checkpointer | None) -> None:
    """Raise NonFiniteLoss naming the epoch, the batch and what was kept, when loss is NaN/inf."""
    value = float(loss)
    if math.isfinite(value):
        return
    kept = checkpointer.describe() if checkpointer is not None else "nothing was saved"
    raise NonFiniteLoss(
        f"the training loss became {value} in epoch {epoch} (from 0), batch {batch}; training stopped "
        f"and {kept}. Try a lower lr, amp=false, or check the dataset for NaN images")


# ------------------------------------------------------------------------------ early stopping

class EarlyStopping:
    """Stop when a metric has not improved by more than `min_delta` for `patience` updates.

    `mode="max"` (e.g. nmi_prev) or `"min"` (a loss). `update(value)` returns True to stop.
    """

    def __init__(self, *, patience: int, min_delta: float = 0.0, mode: str = "max"):
        if mode not in ("max", "min"):
            raise ConfigError(f"mode={mode!r} must be max or min")
        self.patience, self.min_delta, self.mode = int(patience), float(min_delta), mode
        self.best: float | None = None
        self.bad_epochs = 0

    def update(self, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        sign = 1.0 if self.mode == "max" else -1.0
        if self.best is None or sign * (value - self.best) > self.min_delta:
            self.best = float(value)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping) -> None:
        self.best = state.get("best")
        self.bad_epochs = int(state.get("bad_epochs", 0))

