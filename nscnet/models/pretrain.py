"""Self-supervised pretraining (SimCLR, Chen et al. 2020) of the embedding network.

Every batch of B images becomes two augmented views each (`two_views`: small circular time
shift, edge masks, gain, Gaussian noise, then SpecAugment masks); the embedding network of NSCNet
(`nscnet.models.backbones.Embedder`) plus a small projection head maps both views, and the
NT-Xent loss (`nt_xent`) pulls the two views of an image together and pushes the other
2B - 2 away. No label is read. After training, the embeddings of every segment are clustered
and scored like any model's (`nscnet.evaluate.evaluate_and_log`), and the embedding network's
state dict is logged as `pretrained/embedder.pt` (+ `pretrained/model.json`); NSCNet starts
from it with `--pretrained_run <run id>` (`load_pretrained`), VAENet from a run of the
`vae_encoder` backbone (`load_pretrained_encoder`). NSCNet's `pretrain_epochs` runs
`contrastive_training` inside its own run.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nscnet import console, defaults, tracking, training
from nscnet.config import DataError, PretrainConfig, replace
from nscnet.dataset import TorchImages, read_dataset
from nscnet.evaluate import evaluate_and_log
from nscnet.models import levers, register
from nscnet.models.backbones import Embedder
from nscnet.models.specaugment import SpecAugment, scaled
from nscnet.postprocess import postprocess

log = logging.getLogger(__name__)

STEP = "pretrain"
ARTIFACT_DIR = "pretrained"


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss of two views z1, z2 (B, P) of the same B images: mean over the 2B anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)                  # (2B, P)
    similarity = z @ z.T / temperature                           # (2B, 2B)
    n = len(z1)
    similarity.fill_diagonal_(float("-inf"))                     # an image is not its own negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(similarity, targets)


def two_views(images: torch.Tensor, cfg: PretrainConfig, augment: SpecAugment,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented copies of images (B, 1, H, W)."""
    return view(images, cfg, augment, generator), view(images, cfg, augment, generator)


def view(images: torch.Tensor, cfg: PretrainConfig, augment: SpecAugment, generator: torch.Generator) -> torch.Tensor:
    """One augmented view of images (B, 1, H, W): time shift, edge masks, gain, noise, SpecAugment masks."""
    batch, _, height, width = images.shape
    out = images
    shift = scaled(cfg.shift, width)
    if shift > 0:  # per-image circular shift along time, by gather
        offsets = torch.randint(-shift, shift + 1, (batch,), generator=generator)
        columns = (torch.arange(width)[None, :] - offsets[:, None]) % width                 # (B, W)
        out = torch.gather(out, 3, columns[:, None, None, :].expand(batch, 1, height, width).to(out.device))
    edge = scaled(cfg.edge_mask, width)
    if edge > 0:  # silence a random number of frames (0..edge) at each end, per image
        left = torch.randint(0, edge + 1, (batch, 1), generator=generator)
        right = torch.randint(0, edge + 1, (batch, 1), generator=generator)
        columns = torch.arange(width)[None, :]
        keep = (columns >= left) & (columns < width - right)                                 # (B, W)
        out = out * keep[:, None, None, :].to(out.device, out.dtype)
    if cfg.gain > 0:
        out = out + ((torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1) * cfg.gain).to(out.device)
    if cfg.noise > 0:
        out = out + (torch.randn(out.shape, generator=generator) * cfg.noise).to(out.device)
    return augment(out.clamp(0.0, 1.0), generator)


def build_projection(cfg: PretrainConfig) -> nn.Module:
    """The two-layer projection head the NT-Xent loss sees (dropped after training)."""
    return nn.Sequential(nn.Linear(cfg.embedding_dim, cfg.embedding_dim), nn.ReLU(),
                         nn.Linear(cfg.embedding_dim, cfg.projection_dim))


def contrastive_training(model: nn.Module, cfg: PretrainConfig, images: TorchImages, device: torch.device, *,
                         prefix: str = "") -> list[float]:
    """Train `model` (an Embedder, already on `device`) by SimCLR for `cfg.epochs`; returns the
    mean loss of every epoch. Logs `<prefix>train_loss`, `<prefix>epoch_seconds` and
    `<prefix>images_per_second` per epoch to the active run. Used by `pretrain` and by NSCNet's
    `pretrain_epochs` (which runs it inside its own run, prefix "pretrain_")."""
    projection = build_projection(cfg).to(device)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(projection.parameters()), lr=cfg.lr)
    augment = SpecAugment(cfg.time_warp, cfg.freq_mask, cfg.freq_masks, cfg.time_mask, cfg.time_masks)
    sampler = torch.utils.data.RandomSampler(images, num_samples=cfg.epoch_size or None,
                                             generator=torch.Generator().manual_seed(cfg.seed))
    loader = training.make_loader(images, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                  device=device, sampler=sampler, seed=cfg.seed, drop_last=len(images) > cfg.batch_size)
    losses = []
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        loss, seen = train_epoch(model, projection, optimizer, loader, cfg, augment, generator, device, epoch)
        seconds = time.perf_counter() - started
        losses.append(loss)
        tracking.log_metrics({f"{prefix}train_loss": loss, f"{prefix}epoch_seconds": seconds,
                              f"{prefix}images_per_second": seen / max(seconds, 1e-9)}, step=epoch)
        console.say(f"pretrain epoch {epoch}: train_loss={loss:.4g}")
    return losses


def nscnet_pretrain_config(cfg: Any, epochs: int, epoch_size: int) -> PretrainConfig:
    """The contrastive settings of NSCNet's in-run pretraining: the network fields, batch size,
    seed and machinery of the NSCNet config `cfg`; every contrastive setting (lr, temperature,
    augmentation) at `PretrainConfig`'s defaults, the ones measured."""
    shared = ("data", "seed", "device", "num_workers", "threads", "backbone", "embedding_dim", "pooling", "input_mode",
              "batch_size")
    return PretrainConfig(**{name: getattr(cfg, name) for name in shared}, k=cfg.k, epochs=epochs,
                          epoch_size=epoch_size)


def train_epoch(model: nn.Module, projection: nn.Module, optimizer: torch.optim.Optimizer, loader: Any,
                cfg: PretrainConfig, augment: SpecAugment, generator: torch.Generator, device: torch.device,
                epoch: int) -> tuple[float, int]:
    """One contrastive pass: (mean NT-Xent loss, images seen)."""
    model.train()
    projection.train()
    total, seen = 0.0, 0
    for batch, (images, _) in enumerate(training.progress(loader, desc=f"pretrain epoch {epoch}")):
        if len(images) < 2:
            continue
        v1, v2 = two_views(images, cfg, augment, generator)
        z = projection(model(torch.cat([v1, v2]).to(device)))
        loss = nt_xent(z[: len(images)], z[len(images):], cfg.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        training.check_finite(loss.detach(), epoch=epoch, batch=batch, checkpointer=None)
        total += float(loss.detach()) * len(images)
        seen += len(images)
    return total / max(seen, 1), seen


def extract(model: nn.Module, images: TorchImages, batch_size: int, device: torch.device) -> np.ndarray:
    """Embeddings (N, embedding_dim) of every image, eval mode, no augmentation."""
    loader = training.make_loader(images, batch_size=batch_size, num_workers=0, device=device)
    model.eval()
    out = np.empty((len(images), cfg_width(model)), dtype=np.float32)
    with torch.inference_mode():
        for batch, index in loader:
            out[index.numpy()] = model(batch.to(device)).float().cpu().numpy()
    return out


def cfg_width(model: nn.Module) -> int:
    return model.embed[1].out_features


@register(STEP)
def run_pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """The `pretrain` entry point: contrastive training, then clustering of its embeddings."""
    dataset = read_dataset(cfg.data)
    cfg, tags = defaults.for_data(cfg, len(dataset))
    if cfg.truth:
        dataset.truth()  # scoring only; fail early without labels
    device = training.choose_device(cfg.device)
    training.configure_cpu_determinism(device)
    training.configure_threads(cfg.threads)
    with tracking.start_run(cfg, STEP, tags=tags) as run:
        training.log_run_config(cfg)
        tracking.log_params({"n_segments": len(dataset), "image_shape": "x".join(map(str, dataset.image_shape))})
        training.seed_everything(cfg.seed)
        model = Embedder(cfg.backbone, embedding_dim=cfg.embedding_dim, pooling=cfg.pooling,
                         input_mode=cfg.input_mode).to(device)
        images = TorchImages(dataset.path)
        losses = contrastive_training(model, cfg, images, device)
        features = extract(model, images, 2 * cfg.batch_size, device)
        if cfg.reducer == "umap":  # post-processing, then UMAP, then the clustering (nothing more on top)
            reduced = levers.umap_reduce(postprocess(features, cfg)[0], cfg)
            metrics = evaluate_and_log(reduced, dataset, replace(cfg, normalize=False, pca_dim=0, whiten=False, l2=False),
                                       embeddings=features)
        else:
            metrics = evaluate_and_log(features, dataset, cfg)
        save_pretrained(model, cfg, dataset.image_shape)
        metrics.update(train_loss=losses[-1] if losses else None, first_loss=losses[0] if losses else None,
                       run_id=run.info.run_id)
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items() if v is not None}
    console.say("pretrain: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return metrics


def save_pretrained(model: Embedder, cfg: PretrainConfig, image_shape: tuple[int, int]) -> None:
    """Log the embedding network's state dict and its description under `pretrained/`."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.save(model.to("cpu").state_dict(), tmp / "embedder.pt")
        description = {"backbone": cfg.backbone, "embedding_dim": cfg.embedding_dim, "pooling": cfg.pooling,
                       "input_mode": cfg.input_mode, "image_shape": list(image_shape)}
        (tmp / "model.json").write_text(json.dumps(description, indent=2))
        tracking.log_artifact(tmp / "embedder.pt", ARTIFACT_DIR)
        tracking.log_artifact(tmp / "model.json", ARTIFACT_DIR)


def load_pretrained(model: Embedder, run_id: str, cfg: Any) -> None:
    """Load a `pretrain` run's weights into model; DataError when the run or its network does not fit.

    The backbone must match (backbone, input_mode); the embedding layer is loaded too when
    embedding_dim matches, else it keeps its fresh initial values.
    """
    description, state = _pretrained(run_id)
    for name in ("backbone", "input_mode"):
        if description[name] != getattr(cfg, name):
            raise DataError(f"pretrained_run={run_id!r} trained {name}={description[name]!r} but this run uses "
                            f"{name}={getattr(cfg, name)!r}")
    if description["embedding_dim"] != cfg.embedding_dim:
        log.warning("pretrained_run %s has embedding_dim=%s, this run %s: only the backbone is loaded",
                    run_id, description["embedding_dim"], cfg.embedding_dim)
        state = {k: v for k, v in state.items() if not k.startswith("embed.")}
    model.load_state_dict(state, strict=False)


def _pretrained(run_id: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(model.json, state dict) of a `pretrain` run; DataError when the run has none."""
    try:
        description = json.loads(Path(tracking.download_artifact(run_id, f"{ARTIFACT_DIR}/model.json")).read_text())
        path = tracking.download_artifact(run_id, f"{ARTIFACT_DIR}/embedder.pt")
    except Exception as exc:  # no such run, or not a pretrain run
        raise DataError(f"pretrained_run={run_id!r}: no pretrained network in that run "
                        f"({str(exc).splitlines()[0][:150]})") from None
    return description, torch.load(path, map_location="cpu", weights_only=True)


def load_pretrained_encoder(model: nn.Module, run_id: str, cfg: Any) -> None:
    """Start VAENet's encoder (`model`: a ConvVAE) from a `pretrain` run of the `vae_encoder`
    backbone with `input_mode adapt`: its five convolution blocks take the pretrained weights
    (and BatchNorm statistics); the bottleneck, dense and decoder layers stay fresh.
    DataError when the run trained another network or this VAE has other encoder widths."""
    from nscnet.config import VaenetConfig

    description, state = _pretrained(run_id)
    if (description["backbone"], description["input_mode"]) != ("vae_encoder", "adapt"):
        raise DataError(f"pretrained_run={run_id!r} trained backbone={description['backbone']!r}, "
                        f"input_mode={description['input_mode']!r}: VAENet starts only from "
                        "`nscnet pretrain --backbone vae_encoder --input_mode adapt`")
    if tuple(cfg.filters) != VaenetConfig().filters or cfg.residual:
        raise DataError(f"pretrained_run={run_id!r}: the vae_encoder backbone has the default filters "
                        f"{VaenetConfig().filters} and no residual blocks; this run has filters={cfg.filters}, "
                        f"residual={cfg.residual}")
    encoder = {"encoder." + key[len("features."):]: value for key, value in state.items() if key.startswith("features.")}
    unexpected = model.load_state_dict(encoder, strict=False).unexpected_keys
    if unexpected:  # cannot happen for matching widths; a guard against silent partial loads
        raise DataError(f"pretrained_run={run_id!r}: weights that VAENet's encoder does not have: {unexpected[:3]}")
