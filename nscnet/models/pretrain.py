"""Self-supervised pretraining (SimCLR, Chen et al. 2020) of the embedding network.

Every batch of B images becomes two augmented views each (`two_views`: small circular time
shift, edge masks, gain, Gaussian noise, then SpecAugment masks); the embedding network of NSCNet
(`nscnet.models.backbones.Embedder`) plus a small projection head maps both views, and the
NT-Xent loss (`nt_xent`) pulls the two views of an image together and pushes the other
2B - 2 away. No label is read. After training, the embeddings of every segment are clustered
and scored like any model's (`nscnet.clustering.evaluate.evaluate_and_log`), and the embedding network is
logged with that clustering as the run's model (`model/`, `nscnet.models.saved`); NSCNet starts
from it with `--pretrained_run <run id>` (`load_pretrained`; the network's description gives
NSCNet's network defaults, `pretrained_network`), VAENet from a run of the `vae_encoder`
backbone (`load_pretrained_encoder`). NSCNet's `pretrain_epochs` runs
`contrastive_training` inside its own run.

Mixed precision (`amp`) applies on CUDA (`nscnet.models.training.Precision`); a run killed at any
point continues with `--resume <run id>` from its last finished epoch (a checkpoint after every
epoch, `nscnet.models.training.Checkpointer`), and on CPU ends with the same network as an
uninterrupted run: every epoch's views depend only on (seed, epoch), and the image order is
replayed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nscnet import defaults
from nscnet.clustering.evaluate import evaluate_and_log
from nscnet.config import DataError, Machine, Network, PretrainConfig, replace
from nscnet.features.postprocess import postprocess
from nscnet.features.reduction import umap_fit
from nscnet.images.dataset import TorchImages, read_dataset
from nscnet.models import training
from nscnet.models.backbones import Embedder
from nscnet.models.specaugment import SpecAugment, scaled
from nscnet.runs import console, tracking

log = logging.getLogger(__name__)

STEP = "pretrain"


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
                         prefix: str = "", checkpointer: training.Checkpointer | None = None,
                         state: dict | None = None, image_shape: tuple[int, int] | None = None) -> list[float]:
    """Train `model` (an Embedder, already on `device`) by SimCLR for `cfg.epochs`; returns the
    mean loss of every epoch. Logs `<prefix>train_loss`, `<prefix>epoch_seconds` and
    `<prefix>images_per_second` per epoch to the active run. Used by `pretrain` and by NSCNet's
    `pretrain_epochs` (which runs it inside its own run, prefix "pretrain_").

    checkpointer: save a checkpoint after every epoch (model, projection head, optimizer,
    losses; `image_shape` recorded); state: such a checkpoint to continue from (`--resume`).
    """
    projection = build_projection(cfg).to(device)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(projection.parameters()), lr=cfg.lr)
    precision = training.Precision(device, cfg.amp)
    augment = SpecAugment(cfg.time_warp, cfg.freq_mask, cfg.freq_masks, cfg.time_mask, cfg.time_masks)
    sampler = torch.utils.data.RandomSampler(images, num_samples=cfg.epoch_size or None,
                                             generator=torch.Generator().manual_seed(cfg.seed))
    loader = training.make_loader(images, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                  device=device, sampler=sampler, seed=cfg.seed, drop_last=len(images) > cfg.batch_size)
    losses: list[float] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        projection.load_state_dict(state["projection"])
        optimizer.load_state_dict(state["optimizer"])
        precision.load_state_dict(state["scaler"])
        start, losses = int(state["epoch"]), [float(v) for v in state["losses"]]
        training.set_rng_state(state["rng"])
        for _ in range(start):  # replay the image order of the finished epochs
            for _ in sampler:
                pass
    with model.unmasked():  # the views draw their own edge masks; embed_edge_mask is for embedding
        for epoch in range(start, cfg.epochs):
            started = time.perf_counter()
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            loss, seen = train_epoch(model, projection, optimizer, loader, cfg, augment, generator, device, epoch,
                                     precision, checkpointer)
            seconds = time.perf_counter() - started
            losses.append(loss)
            tracking.log_metrics({f"{prefix}train_loss": loss, f"{prefix}epoch_seconds": seconds,
                                  f"{prefix}images_per_second": seen / max(seconds, 1e-9)}, step=epoch)
            console.say(f"pretrain epoch {epoch}: train_loss={loss:.4g}")
            if checkpointer is not None:
                checkpointer.save({"epoch": epoch + 1, "model": model.state_dict(),
                                   "projection": projection.state_dict(), "optimizer": optimizer.state_dict(),
                                   "scaler": precision.state_dict(), "losses": list(losses),
                                   "image_shape": list(image_shape or ())})
    return losses


def nscnet_pretrain_config(cfg: Any, epochs: int, epoch_size: int) -> PretrainConfig:
    """The contrastive settings of NSCNet's in-run pretraining: the network and machine groups,
    batch size and seed of the NSCNet config `cfg`; every contrastive setting (lr, temperature,
    views, augmentation) at `PretrainConfig`'s defaults, the ones measured."""
    return PretrainConfig(**dataclasses.asdict(cfg.group(Network)), **dataclasses.asdict(cfg.group(Machine)),
                          batch_size=cfg.batch_size, seed=cfg.seed, epochs=epochs, epoch_size=epoch_size)


def train_epoch(model: nn.Module, projection: nn.Module, optimizer: torch.optim.Optimizer, loader: Any,
                cfg: PretrainConfig, augment: SpecAugment, generator: torch.Generator, device: torch.device,
                epoch: int, precision: training.Precision | None = None,
                checkpointer: training.Checkpointer | None = None) -> tuple[float, int]:
    """One contrastive pass: (mean NT-Xent loss, images seen); autocast on CUDA with `precision`."""
    precision = precision or training.Precision(device, False)
    model.train()
    projection.train()
    total, seen = 0.0, 0
    for batch, (images, _) in enumerate(training.progress(loader, desc=f"pretrain epoch {epoch}")):
        if len(images) < 2:
            continue
        v1, v2 = two_views(images, cfg, augment, generator)
        with precision.autocast():
            z = projection(model(training.to_device_batch(torch.cat([v1, v2]), device))).float()
        loss = nt_xent(z[: len(images)], z[len(images):], cfg.temperature)
        optimizer.zero_grad(set_to_none=True)
        precision.step(loss, [optimizer])
        training.check_finite(loss.detach(), epoch=epoch, batch=batch, checkpointer=checkpointer)
        total += float(loss.detach()) * len(images)
        seen += len(images)
    return total / max(seen, 1), seen


def extract(model: nn.Module, images: TorchImages, batch_size: int, device: torch.device) -> np.ndarray:
    """Embeddings (N, embedding_dim) of every image, eval mode, no augmentation."""
    loader = training.make_loader(images, batch_size=batch_size, num_workers=0, device=device)
    model.eval()
    out = np.empty((len(images), model.out_dim), dtype=np.float32)
    with torch.inference_mode():
        for batch, index in loader:
            out[index.numpy()] = model(batch.to(device)).float().cpu().numpy()
    return out


def run_pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """The `pretrain` entry point: contrastive training, then clustering of its embeddings."""
    if cfg.resume:  # the interrupted run's own config; only where it runs may change
        cfg = training.resume_config(cfg.resume, STEP, PretrainConfig, resume=cfg.resume, device=cfg.device,
                                     amp=cfg.amp, num_workers=cfg.num_workers, threads=cfg.threads)
    dataset = read_dataset(cfg.data)
    cfg, tags = defaults.for_data(cfg, len(dataset))
    cfg, tags = defaults.resolve_embed_edge_mask(cfg, dataset.pad, cfg.edge_mask, tags)
    if cfg.truth:
        dataset.truth()  # scoring only; fail early without labels
    device = training.choose_device(cfg.device)
    training.configure_cpu_determinism(device)
    training.configure_threads(cfg.threads)
    with tracking.start_run(cfg, STEP, run_id=cfg.resume or None, tags=tags) as run:
        state = training.resume_state(cfg.resume) if cfg.resume else None
        if not cfg.resume:
            training.log_run_config(cfg)
            tracking.log_params({"n_segments": len(dataset), "image_shape": "x".join(map(str, dataset.image_shape)),
                                 "precision": training.Precision(device, cfg.amp).name})
        if state is not None and tuple(state["image_shape"]) != dataset.image_shape:
            raise DataError(f"{cfg.data} holds {dataset.image_shape} images but the checkpoint of run "
                            f"{cfg.resume} was trained on {tuple(state['image_shape'])}")
        training.seed_everything(cfg.seed)
        model = Embedder(cfg.backbone, embedding_dim=cfg.embedding_dim, pooling=cfg.pooling,
                         input_mode=cfg.input_mode, edge_mask=cfg.embed_edge_mask).to(device)
        images = TorchImages(dataset.path)
        losses = contrastive_training(model, cfg, images, device, checkpointer=training.Checkpointer(run.info.run_id),
                                      state=state, image_shape=dataset.image_shape)
        features = extract(model, images, 2 * cfg.batch_size, device)
        model = model.to("cpu").eval()
        if cfg.reducer == "umap":  # post-processing, then UMAP, then the clustering (nothing more on top)
            processed, notes = postprocess(features, cfg)
            reduced, reducer = umap_fit(processed, cfg)
            metrics = evaluate_and_log(reduced, dataset, replace(cfg, normalize=False, pca_dim=0, whiten=False, l2=False),
                                       embeddings=features, save_model=STEP, network=model,
                                       feature_chain=[notes["pipeline"], reducer], model_extra={"amp": False})
        else:
            metrics = evaluate_and_log(features, dataset, cfg, save_model=STEP, network=model, model_extra={"amp": False})
        metrics.update(train_loss=losses[-1] if losses else None, first_loss=losses[0] if losses else None,
                       run_id=run.info.run_id)
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items() if v is not None}
    console.say("pretrain: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return metrics


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


def pretrained_network(run_id: str) -> dict[str, Any]:
    """The description of a pretrained run's embedding network: backbone, embedding_dim,
    pooling, input_mode and the image_shape it was trained on (NSCNet's defaults with
    `pretrained_run`)."""
    saved = _saved(run_id)
    return {**saved.description["network"], "image_shape": list(saved.image_shape)}


def _saved(run_id: str) -> Any:
    from nscnet.models.saved import load_model

    try:
        saved = load_model(run_id)
    except DataError as exc:  # no such run, no model, an old format
        raise DataError(f"pretrained_run={run_id!r}: {exc}") from None
    network = saved.description.get("network") or {}
    if network.get("kind") != "embedder" or saved.weights is None:
        raise DataError(f"pretrained_run={run_id!r}: that run ({saved.description.get('step')}) saved no "
                        "embedding network; give the id of a `nscnet pretrain` run")
    return saved


def _pretrained(run_id: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(network description, state dict) of a `pretrain` run; DataError when the run has none."""
    saved = _saved(run_id)
    return saved.description["network"], saved.weights


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
