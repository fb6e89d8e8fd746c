"""VAENet: train the convolutional VAE, encode every segment, cluster the latent means.

The network and its loss live in `nscnet.models.vae_model`; devices, mixed precision, the
memmap DataLoader, seeding, checkpoints and resume come from `nscnet.models.training` (shared with
NSCNet); post-processing, clustering, metrics, figures and exports from `nscnet.clustering.evaluate`
(shared with BASENet). The epoch reads top to bottom in `run_vaenet`:

    for each epoch: train on the shuffled training split -> validation loss -> log
                    recon_loss, kl_loss, train_loss, val_loss -> reconstruction figure ->
                    checkpoint -> early stopping on val_loss
    then: latent means of every segment -> post-processing -> clustering -> metrics, exports,
          the model (`model/`: the VAE, the fitted post-processing, the final clustering) for
          `nscnet predict` (`nscnet.models.saved`)

A run killed at any point continues with `--resume <run id>` from its last finished epoch;
with a fixed seed on CPU it ends with the same model and assignments as an uninterrupted run,
because every epoch's randomness (shuffling, reparameterisation noise) depends only on
(seed, epoch).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from nscnet import defaults
from nscnet.clustering.evaluate import evaluate_and_log
from nscnet.config import DataError, VaenetConfig
from nscnet.images.dataset import TorchImages, read_dataset
from nscnet.models.vae_model import ConvVAE, count_parameters, kl_weight, vae_loss
from nscnet.runs import console, tracking
from nscnet.models.training import (Checkpointer, EarlyStopping, Precision, check_finite, choose_device,
                             configure_cpu_determinism, configure_threads, log_run_config, make_loader, progress,
                             resume_config, resume_state, seed_everything, to_device_batch)

log = logging.getLogger(__name__)

STEP = "vaenet"
FIGURE = "reconstructions"


class EpochPermutation(Sampler):
    """Indices 0..n-1 in an order drawn from (seed, epoch) alone: a resumed run shuffles its
    epochs exactly as an uninterrupted one. Call `set_epoch` before iterating."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices, sorted; a seeded random `val_fraction` share held out."""
    n_val = int(round(n * val_fraction))
    if val_fraction > 0:
        n_val = max(1, n_val)
    if n - n_val < 2:
        raise DataError(f"VAENet needs at least 2 training segments; the dataset has {n} "
                        f"(val_fraction={val_fraction} holds out {n_val})")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def mean_pixel(images: np.ndarray, indices: np.ndarray, *, sample: int = 2048) -> float:
    """Mean brightness of up to `sample` evenly spaced images of the memmap (N, H, W)."""
    rows = indices[np.linspace(0, len(indices) - 1, min(sample, len(indices))).astype(int)]
    return float(np.mean([images[i].mean(dtype=np.float64) for i in np.unique(rows)]))


def build_model(cfg: VaenetConfig, image_shape: tuple[int, int]) -> ConvVAE:
    return ConvVAE(image_shape, latent_dim=cfg.latent_dim, filters=cfg.filters,
                   dense_units=cfg.dense_units, residual=cfg.residual)


def train_epoch(model: ConvVAE, loader: Any, optimizer: torch.optim.Optimizer, precision: Precision,
                device: torch.device, *, beta: float, recon: str, epoch: int,
                checkpointer: Checkpointer | None = None) -> dict[str, float]:
    """One pass over `loader`; per-image means of the losses and the training throughput."""
    model.train()
    sums = {"train_loss": 0.0, "recon_loss": 0.0, "kl_loss": 0.0}
    seen = 0
    start = time.perf_counter()
    for batch, (images, _) in enumerate(progress(loader, desc=f"vaenet epoch {epoch + 1}")):
        images = to_device_batch(images, device)
        with precision.autocast():
            logits, mu, logvar = model(images)
        total, reconstruction, kl = vae_loss(logits, images, mu, logvar, recon=recon, beta=beta)
        optimizer.zero_grad(set_to_none=True)
        precision.step(total, [optimizer])
        values = torch.stack([total.detach(), reconstruction.detach(), kl.detach()]).tolist()  # one device sync
        check_finite(values[0], epoch=epoch, batch=batch, checkpointer=checkpointer)
        n = images.shape[0]
        seen += n
        for key, value in zip(sums, values):
            sums[key] += value * n
    seconds = time.perf_counter() - start
    out = {key: value / max(seen, 1) for key, value in sums.items()}
    out.update(epoch_seconds=seconds, images_per_second=seen / seconds if seconds > 0 else None)
    return out


@torch.no_grad()
def evaluate_loss(model: ConvVAE, loader: Any, precision: Precision, device: torch.device, *,
                  beta: float, recon: str) -> float:
    """Per-image loss on `loader` in evaluation mode (decoded from the latent mean)."""
    model.eval()
    total, seen = 0.0, 0
    for images, _ in loader:
        images = to_device_batch(images, device)
        with precision.autocast():
            logits, mu, logvar = model(images)
        loss, _, _ = vae_loss(logits, images, mu, logvar, recon=recon, beta=beta)
        total += loss.item() * images.shape[0]
        seen += images.shape[0]
    return total / max(seen, 1)


@torch.no_grad()
def encode(model: ConvVAE, loader: Any, precision: Precision, device: torch.device) -> np.ndarray:
    """Latent means of every image of `loader`, in loader order: (N, latent_dim) float32."""
    model.eval()
    chunks = []
    for images, _ in progress(loader, desc="vaenet encode"):
        with precision.autocast():
            mu, _ = model.encode(to_device_batch(images, device))
        chunks.append(mu.float().cpu().numpy())
    return np.concatenate(chunks).astype(np.float32)


def reconstruction_figure(inputs: np.ndarray, reconstructions: np.ndarray, *, title: str = "") -> Any:
    """Plotly heatmaps: inputs (n, H, W) in the top row, their reconstructions below."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    n = len(inputs)
    fig = make_subplots(rows=2, cols=n, shared_yaxes=True, horizontal_spacing=0.01, vertical_spacing=0.08,
                        subplot_titles=[f"input {i + 1}" for i in range(n)] + [f"reconstruction {i + 1}" for i in range(n)])
    for row, images in ((1, inputs), (2, reconstructions)):
        for col, image in enumerate(images, start=1):
            fig.add_trace(go.Heatmap(z=image, coloraxis="coloraxis"), row=row, col=col)
    fig.update_layout(title=title, coloraxis=dict(colorscale="Magma", cmin=0, cmax=1), height=420)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def _show_batch(images: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(images[rows], dtype=np.float32)).unsqueeze(1)


def log_reconstructions(model: ConvVAE, shown: torch.Tensor, device: torch.device, *, epoch: int,
                        png: bool) -> None:
    """Refresh `figures/reconstructions.html` (and `.png` when asked) from the current model."""
    if len(shown) == 0:
        return
    model.eval()
    recon = model.reconstruct(to_device_batch(shown, device)).float().cpu().numpy()[:, 0]
    fig = reconstruction_figure(shown.numpy()[:, 0], recon, title=f"VAENet reconstructions after epoch {epoch + 1}")
    tracking.log_figure(fig, FIGURE, png=png)


def run_vaenet(cfg: VaenetConfig) -> dict[str, Any]:
    """Train VAENet on `cfg.data`, cluster its latent means, log everything to one MLflow run."""
    if cfg.resume:  # the interrupted run's own config; only where it runs may change
        cfg = resume_config(cfg.resume, STEP, VaenetConfig, resume=cfg.resume, device=cfg.device,
                            amp=cfg.amp, num_workers=cfg.num_workers, threads=cfg.threads)
    dataset = read_dataset(cfg.data)
    cfg, tags = defaults.for_data(cfg, len(dataset))  # auto k, ...: from N (a resumed run has them already)
    if cfg.truth:
        dataset.truth()  # no reference labels: fail before training, not after
    device = choose_device(cfg.device)
    configure_cpu_determinism(device)
    configure_threads(cfg.threads)
    precision = Precision(device, cfg.amp)
    train_rows, val_rows = split_indices(len(dataset), cfg.val_fraction, cfg.seed)

    with tracking.start_run(cfg, STEP, run_id=cfg.resume or None, tags=tags) as run:
        checkpointer = Checkpointer(run.info.run_id)
        state = resume_state(cfg.resume) if cfg.resume else None
        if not cfg.resume:
            log_run_config(cfg)
            tracking.log_params({"device_used": device.type, "precision": precision.name,
                                 "n_train": len(train_rows), "n_val": len(val_rows)})

        seed_everything(cfg.seed)
        model = build_model(cfg, dataset.image_shape)
        if cfg.pretrained_run and state is None:  # a resumed run has its weights in the checkpoint
            from nscnet.models.pretrain import load_pretrained_encoder

            load_pretrained_encoder(model, cfg.pretrained_run, cfg)
        model.init_output_bias(mean_pixel(dataset.images, train_rows))
        model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        stopper = EarlyStopping(patience=cfg.patience, min_delta=cfg.min_delta, mode="min")
        start_epoch, finished = 0, False
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            precision.load_state_dict(state.get("precision", {}))
            stopper.load_state_dict(state["early_stopping"])
            start_epoch, finished = int(state["epoch"]), bool(state["finished"])
            log.info("resuming run %s after epoch %d", run.info.run_id, start_epoch)
        else:
            tracking.log_params({"n_parameters": count_parameters(model)})

        sampler = EpochPermutation(len(train_rows), cfg.seed)
        train_loader = make_loader(TorchImages(dataset.path, train_rows), batch_size=cfg.batch_size,
                                   num_workers=cfg.num_workers, device=device, sampler=sampler, seed=cfg.seed,
                                   drop_last=len(train_rows) % cfg.batch_size == 1)  # no batch of one for batch norm
        val_loader = (make_loader(TorchImages(dataset.path, val_rows), batch_size=cfg.batch_size,
                                  num_workers=cfg.num_workers, device=device, seed=cfg.seed)
                      if len(val_rows) else None)
        shown = _show_batch(dataset.images, (val_rows if len(val_rows) else train_rows)[:cfg.n_reconstructions])

        epochs_done = start_epoch
        for epoch in range(start_epoch, start_epoch if finished else cfg.epochs):
            seed_everything(cfg.seed, epoch)
            sampler.set_epoch(epoch)
            weight = kl_weight(epoch, beta=cfg.beta, warmup_epochs=cfg.kl_warmup_epochs)
            metrics = train_epoch(model, train_loader, optimizer, precision, device, beta=weight,
                                  recon=cfg.recon_loss, epoch=epoch, checkpointer=checkpointer)
            # validation always weighs KL by the full beta, so warm-up epochs compare with later ones
            if val_loader is not None:
                metrics["val_loss"] = evaluate_loss(model, val_loader, precision, device, beta=cfg.beta,
                                                    recon=cfg.recon_loss)
            metrics["kl_weight"] = weight
            tracking.log_metrics(metrics, step=epoch)
            monitored = metrics.get("val_loss", metrics["train_loss"])
            early_stop = stopper.update(monitored)
            finished = early_stop or epoch + 1 == cfg.epochs
            epochs_done = epoch + 1
            log_reconstructions(model, shown, device, epoch=epoch, png=finished)
            checkpointer.save({"epoch": epochs_done, "finished": finished, "model": model.state_dict(),
                               "optimizer": optimizer.state_dict(), "precision": precision.state_dict(),
                               "early_stopping": stopper.state_dict()})
            log.info("epoch %d: train_loss %.2f recon %.2f kl %.2f val_loss %s", epoch + 1, metrics["train_loss"],
                     metrics["recon_loss"], metrics["kl_loss"], metrics.get("val_loss"))
            if early_stop:
                log.info("early stopping after epoch %d: %s has not improved by %s for %d epochs",
                         epochs_done, "val_loss" if val_loader is not None else "train_loss",
                         cfg.min_delta, cfg.patience)
            if finished:
                break

        start = time.perf_counter()
        all_loader = make_loader(TorchImages(dataset.path), batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                 device=device, seed=cfg.seed)
        features = encode(model, all_loader, precision, device)
        tracking.log_metrics({"segments_per_second": len(features) / max(time.perf_counter() - start, 1e-9),
                              "epochs_trained": epochs_done})

        result = evaluate_and_log(features, dataset, cfg, embeddings=features, save_model=STEP, network=model,
                                  model_extra={"amp": cfg.amp})
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items() if v is not None}
    console.say(f"vaenet: {epochs_done} epochs, " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return {"run_id": run.info.run_id, "epochs_trained": epochs_done, **result}
