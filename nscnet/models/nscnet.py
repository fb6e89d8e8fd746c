"""NSCNet: DeepCluster-style end-to-end deep clustering of spectrogram images.

Every epoch, in order (Caron et al. 2018, as the NSCNet paper uses it):
1. embed the whole dataset (eval mode, no augmentation)      -> features (N, embedding_dim)
2. post-process (PCA, L2, ...) and k-means with k clusters    -> pseudo-labels (N,)
3. nmi_prev: NMI of these pseudo-labels with the previous epoch's
4. a fresh classifier head (softmax or ArcFace) for the new labels; with `head_warmup`,
   first fitted alone to them on the fixed embeddings (`deepcluster.fit_head`)
5. one pass of epoch_length x N images drawn uniformly over clusters, SpecAugment on each
   batch, cross-entropy on the pseudo-labels, Adam (the network at lr x backbone_lr_scale).
Metrics of step e: the clustering at the start of epoch e and the training of epoch e. The
final clustering (after the last epoch, or when nmi_prev stops improving) gives the exports.
A checkpoint after every epoch lets `--resume <run id>` continue a killed run exactly.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import normalized_mutual_info_score

from nscnet import defaults
from nscnet.clustering.evaluate import add_stability, flag_noise, log_exports, log_figures, score
from nscnet.clustering.final import fit_final_clustering, needs_final_clustering
from nscnet.config import NETWORK_DEFAULTS, ConfigError, DataError, NscnetConfig, replace, with_network_defaults
from nscnet.features.postprocess import build_postprocess
from nscnet.images.dataset import Dataset, TorchImages, read_dataset
from nscnet.models import training, deepcluster
from nscnet.models.arcface import make_head
from nscnet.models.backbones import Embedder, EmbedderEnsemble, load_backbone_weights
from nscnet.models.sampler import ClusterUniformSampler
from nscnet.models.saved import log_model
from nscnet.models.specaugment import SpecAugment
from nscnet.report import plots
from nscnet.runs import console, tracking

log = logging.getLogger(__name__)

STEP = "nscnet"


# --------------------------------------------------------------------------- model pieces

def build_model(cfg: NscnetConfig) -> Embedder | EmbedderEnsemble:
    """The embedding network of `cfg` (backbone, pooling, embedding_dim, input_mode; those left
    empty from the pretrained_run's network, else NETWORK_DEFAULTS)."""
    if cfg.pretrained_run and any(getattr(cfg, name) in ("", 0) for name in NETWORK_DEFAULTS):
        from nscnet.models.pretrain import pretrained_network

        cfg = resolve_network(cfg, pretrained_network(cfg.pretrained_run))
    cfg = with_network_defaults(cfg)

    def embedder() -> Embedder:
        return Embedder(cfg.backbone, embedding_dim=cfg.embedding_dim, pooling=cfg.pooling, input_mode=cfg.input_mode,
                        edge_mask=max(cfg.embed_edge_mask, 0))

    if cfg.ensemble > 1:  # member 0 is the network a run of one would build; the others from their own seeds
        members, state = [embedder()], torch.get_rng_state()
        for member in range(1, cfg.ensemble):
            torch.manual_seed(cfg.seed + member)
            members.append(embedder())
        torch.set_rng_state(state)  # what follows draws as in a run of one network
        return EmbedderEnsemble(members)
    model = embedder()
    if cfg.pretrained_weights:
        load_backbone_weights(model, cfg.pretrained_weights)
    if cfg.pretrained_run:
        from nscnet.models.pretrain import load_pretrained

        load_pretrained(model, cfg.pretrained_run, cfg)
    return model


def resolve_network(cfg: NscnetConfig, pretrained: dict[str, Any]) -> NscnetConfig:
    """cfg with the network fields it leaves empty ("" / 0) taken from the pretrained run's
    network description `pretrained` (`pretrain.pretrained_network`); the fields the user gave
    stay, and `load_pretrained` refuses those that contradict the pretrained network."""
    empty = {name: pretrained[name] for name in NETWORK_DEFAULTS if getattr(cfg, name) in ("", 0)}
    if empty:
        log.info("pretrained_run %s: network %s from its description", cfg.pretrained_run,
                 ", ".join(f"{k}={v}" for k, v in empty.items()))
    return replace(cfg, **empty) if empty else cfg


def trained_edge_mask(cfg: NscnetConfig) -> int:
    """The contrastive `edge_mask` the network of `cfg` is trained with (in-run pretraining: `pretrain`'s
    default; `pretrained_run`: that run's), 0 when it is never trained contrastively: what
    `embed_edge_mask` auto silences when the cuts are centred (`nscnet.defaults.auto_embed_edge_mask`)."""
    if cfg.pretrain_epochs:
        from nscnet.models.pretrain import nscnet_pretrain_config

        return nscnet_pretrain_config(cfg, 1, cfg.pretrain_epoch_size).edge_mask
    if cfg.pretrained_run:
        return int(float(tracking.get_run(cfg.pretrained_run).data.params.get("edge_mask", 0)))
    return 0


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model on the device; channels-last memory format on CUDA."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


@torch.inference_mode()
def extract_features(model: torch.nn.Module, loader: Any, device: torch.device,
                     precision: training.Precision, *, desc: str = "features") -> np.ndarray:
    """Embeddings (N, embedding_dim) float32 of every image, eval mode, no augmentation."""
    model.eval()
    out = np.empty((len(loader.dataset), model.out_dim), dtype=np.float32)
    for images, index in training.progress(loader, desc=desc):
        with precision.autocast():
            embeddings = model(training.to_device_batch(images, device))
        out[index.numpy()] = embeddings.float().cpu().numpy()
    return out


@torch.no_grad()
def set_batchnorm_statistics(model: torch.nn.Module, loader: Any, device: torch.device,
                             precision: training.Precision) -> None:
    """One pass in train mode (no gradients) so BatchNorm holds the data's statistics.

    An untrained network in eval mode normalises with mean 0 / variance 1, which makes the
    epoch-0 features (and clusters) degenerate (docs/nscnet.md). momentum=None makes
    the running statistics the plain average over the pass.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for images, _ in training.progress(loader, desc="batch-norm statistics"):
        with precision.autocast():
            model(training.to_device_batch(images, device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def train_epoch(model: torch.nn.Module, head: torch.nn.Module, optimizers: list, loader: Any,
                pseudo_labels: np.ndarray, augment: SpecAugment, generator: torch.Generator,
                device: torch.device, precision: training.Precision, *, epoch: int,
                checkpointer: training.Checkpointer | None) -> tuple[float, int]:
    """One pass over the sampler's images: (mean cross-entropy, images seen).

    Raises NonFiniteLoss as soon as the loss is NaN/inf (checked every batch on CPU and
    every 25 batches on CUDA, where each check waits for the GPU).
    """
    model.train()
    head.train()
    targets_all = torch.from_numpy(pseudo_labels.astype(np.int64))
    check_every = 25 if device.type == "cuda" else 1
    total, seen = torch.zeros((), device=device), 0
    for batch, (images, index) in enumerate(training.progress(loader, desc=f"epoch {epoch}")):
        targets = targets_all[index].to(device, non_blocking=True)
        images = augment(images.to(device, non_blocking=True), generator)   # (B, 1, H, W)
        with precision.autocast():
            logits = head(model(training.to_device_batch(images, device)), targets)
            loss = F.cross_entropy(logits.float(), targets)
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        precision.step(loss, optimizers)
        total += loss.detach() * len(index)
        seen += len(index)
        if batch % check_every == 0:
            training.check_finite(loss.detach(), epoch=epoch, batch=batch, checkpointer=checkpointer)
    training.check_finite(total, epoch=epoch, batch=batch, checkpointer=checkpointer)
    return float(total) / max(seen, 1), seen


def size_metrics(labels: np.ndarray, k: int) -> dict[str, float]:
    """Summary of the cluster-size distribution (the full sizes go to cluster_sizes.json)."""
    sizes = np.bincount(labels[labels >= 0], minlength=k)
    nonzero = sizes[sizes > 0]
    share = nonzero / nonzero.sum()
    return {"cluster_size_max_share": float(share.max()), "cluster_size_min": float(nonzero.min()),
            "cluster_size_median": float(np.median(nonzero)), "empty_clusters": float(k - len(nonzero)),
            "cluster_size_entropy": float(-(share * np.log(share)).sum() / np.log(max(k, 2)))}


def check_inputs(cfg: NscnetConfig, dataset: Dataset) -> None:
    if cfg.algorithm != "kmeans":
        raise ConfigError(f"algorithm={cfg.algorithm!r}: NSCNet trains on k-means pseudo-labels (algorithm=kmeans)")
    if deepcluster.training_k(cfg) < 2:  # k = 0 with a density final clustering: k_train (auto) is the pseudo-labels' K
        raise ConfigError(f"k={cfg.k}: NSCNet needs at least 2 clusters to classify")
    if cfg.k > len(dataset):
        raise ConfigError(f"k={cfg.k} is larger than the number of segments in {cfg.data} ({len(dataset)}): choose k <= {len(dataset)}")
    if cfg.k_train > len(dataset):
        raise ConfigError(f"k_train={cfg.k_train} is larger than the number of segments in {cfg.data} ({len(dataset)})")


# --------------------------------------------------------------------------- the entry point

def run_nscnet(cfg: NscnetConfig) -> dict[str, Any]:
    """The `nscnet` entry point: train, cluster every epoch, log everything; returns final metrics."""
    if cfg.resume:  # the run's own config, except what may change on resume
        cfg = training.resume_config(cfg.resume, STEP, NscnetConfig, resume=cfg.resume, device=cfg.device,
                                     amp=cfg.amp, num_workers=cfg.num_workers, threads=cfg.threads)
    pretrained = None
    if cfg.pretrained_run and not cfg.resume:  # a resumed run has its network in its config and checkpoint
        from nscnet.models.pretrain import pretrained_network

        pretrained = pretrained_network(cfg.pretrained_run)
        cfg = resolve_network(cfg, pretrained)
    cfg = with_network_defaults(cfg)  # what is still empty: the built-in network
    cfg = deepcluster.resolve_head_warmup(cfg)  # auto: a fitted head after pretraining (docs/RESULTS.md)
    dataset = read_dataset(cfg.data)
    cfg, tags = defaults.for_data(cfg, len(dataset))  # auto k, min_cluster_size, ...: from N (a resumed run has them)
    cfg, tags = defaults.resolve_embed_edge_mask(cfg, dataset.pad, trained_edge_mask(cfg), tags)
    k_train = deepcluster.training_k(cfg)
    if pretrained is not None and tuple(pretrained["image_shape"]) != tuple(dataset.image_shape):
        log.warning("pretrained_run %s was trained on %s images, %s holds %s: the network runs on any size, but "
                    "its features were learned at the other", cfg.pretrained_run,
                    "x".join(map(str, pretrained["image_shape"])), cfg.data, "x".join(map(str, dataset.image_shape)))
    check_inputs(cfg, dataset)
    truth = dataset.truth() if cfg.truth else None  # scoring only, never for training
    device = training.choose_device(cfg.device)
    precision = training.Precision(device, cfg.amp)
    training.configure_cpu_determinism(device)
    training.configure_threads(cfg.threads)

    with tracking.start_run(cfg, STEP, run_id=cfg.resume or None, tags=tags) as run:
        state = training.resume_state(cfg.resume) if cfg.resume else None
        if not cfg.resume:
            training.log_run_config(cfg)
            tracking.log_params({"n_segments": len(dataset), "image_shape": "x".join(map(str, dataset.image_shape)),
                                 "device_used": device.type, "precision": precision.name})
        checkpointer = training.Checkpointer(run.info.run_id)

        training.seed_everything(cfg.seed)
        model = prepare_model(build_model(cfg), device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr * cfg.backbone_lr_scale)
        images = TorchImages(dataset.path)
        feature_loader = training.make_loader(images, batch_size=2 * cfg.batch_size, num_workers=cfg.num_workers,
                                              device=device)
        sampler = ClusterUniformSampler(len(dataset), epoch_length=cfg.epoch_length, seed=cfg.seed)
        train_loader = training.make_loader(images, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                                            device=device, sampler=sampler, seed=cfg.seed,
                                            drop_last=len(sampler) > cfg.batch_size)  # no batch of 1 for BatchNorm
        augment = SpecAugment(cfg.time_warp, cfg.freq_mask, cfg.freq_masks, cfg.time_mask, cfg.time_masks)
        stopper = training.EarlyStopping(patience=cfg.patience, min_delta=cfg.min_delta, mode="max")

        start, previous, sizes_history, head = 0, None, {}, None
        if state is not None:
            if tuple(state["image_shape"]) != dataset.image_shape:
                raise DataError(f"{cfg.data} holds {dataset.image_shape} images but the checkpoint of run "
                                f"{cfg.resume} was trained on {tuple(state['image_shape'])}")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            precision.load_state_dict(state["scaler"])
            stopper.load_state_dict(state["stopper"])
            start, previous = int(state["epoch"]), training.labels_from_tensor(state["pseudo_labels"])
            sizes_history = {int(k): v for k, v in state["sizes"].items()}
            training.set_rng_state(state["rng"])
            log.info("resuming run %s after epoch %d", run.info.run_id, start - 1)
        else:
            if cfg.pretrain_epochs:  # SimCLR first, in this run (a resumed run has it in its checkpoint)
                from nscnet.models.pretrain import contrastive_training, nscnet_pretrain_config

                members = model.members if cfg.ensemble > 1 else [model]
                for member, network in enumerate(members):  # each from its own seed (`ensemble`)
                    prefix = "pretrain_" if member == 0 else f"pretrain{member}_"
                    if member:
                        training.seed_everything(cfg.seed + member)
                    member_cfg = replace(cfg, seed=cfg.seed + member)
                    losses = contrastive_training(network, nscnet_pretrain_config(member_cfg, cfg.pretrain_epochs,
                                                                                  cfg.pretrain_epoch_size),
                                                  images, device, prefix=prefix)
                    tracking.log_metrics({f"{prefix}first_loss": losses[0], f"{prefix}last_loss": losses[-1]})
                training.seed_everything(cfg.seed)  # the DeepCluster phase starts from the same RNG state
            if not (cfg.pretrain_epochs or cfg.pretrained_run):  # a pretrained network has its own statistics
                set_batchnorm_statistics(model, feature_loader, device, precision)

        for epoch in range(start, cfg.epochs + 1):
            started = time.perf_counter()
            # 1-2. features of the whole dataset -> post-processing -> k-means pseudo-labels
            features = extract_features(model, feature_loader, device, precision)
            features_seconds = time.perf_counter() - started
            pseudo_labels, processed, result, lever_metrics = deepcluster.cluster_epoch(features, cfg, previous, device=device)
            metrics = score(processed, result, cfg, truth)
            metrics.update(lever_metrics)
            metrics.update(size_metrics(pseudo_labels, k_train), features_seconds=features_seconds,
                           cluster_seconds=time.perf_counter() - started - features_seconds)
            sizes_history[epoch] = np.bincount(pseudo_labels, minlength=k_train).tolist()
            # 3. stability of the pseudo-labels, and early stopping on it
            if previous is not None:
                metrics["nmi_prev"] = normalized_mutual_info_score(previous, pseudo_labels)
            stop = stopper.update(metrics.get("nmi_prev"))
            if epoch == cfg.epochs or stop:
                tracking.log_metrics(metrics, step=epoch)
                if stop:
                    log.info("early stop at epoch %d: nmi_prev has not improved by %g for %d epochs",
                             epoch, cfg.min_delta, cfg.patience)
                break
            # 4-5. a fresh head for the new labels, one epoch of classification on them
            training.seed_everything(cfg.seed, epoch + 1)
            if head is None or not cfg.keep_head:  # keep_head: pseudo-labels were matched to the last epoch's
                head = make_head("arcface" if cfg.arcface else "softmax", model.out_dim, k_train,
                                 scale=cfg.arcface_scale, margin=cfg.arcface_margin).to(device)
                head_optimizer = torch.optim.Adam(head.parameters(), lr=cfg.lr)
                if cfg.head_warmup:  # the fresh head fitted to the labels on fixed embeddings first
                    metrics["head_warmup_loss"] = deepcluster.fit_head(head, features, pseudo_labels, steps=cfg.head_warmup,
                                                                  seed=cfg.seed * 1_000_003 + epoch)
            sampler.set_labels(pseudo_labels, epoch)
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            train_started = time.perf_counter()
            train_loss, seen = train_epoch(model, head, [optimizer, head_optimizer], train_loader, pseudo_labels,
                                           augment, generator, device, precision, epoch=epoch,
                                           checkpointer=checkpointer)
            train_seconds = time.perf_counter() - train_started
            metrics.update(train_loss=train_loss, images_per_second=seen / max(train_seconds, 1e-9),
                           epoch_seconds=time.perf_counter() - started)
            tracking.log_metrics(metrics, step=epoch)
            console.say(f"nscnet epoch {epoch}: " + ", ".join(
                f"{k}={metrics[k]:.4g}" for k in ("train_loss", "nmi_prev", "silhouette", "nmi_truth")
                if metrics.get(k) is not None))
            previous = pseudo_labels
            checkpointer.save({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "scaler": precision.state_dict(), "stopper": stopper.state_dict(),
                               "pseudo_labels": training.labels_to_tensor(pseudo_labels),
                               "sizes": {str(k): v for k, v in sizes_history.items()},
                               "image_shape": list(dataset.image_shape)})

        chain = None  # the fitted steps from the embeddings to the final clustered space
        if needs_final_clustering(cfg):  # final clustering at k, by final_reducer / final_algorithm
            processed, result, final_params, chain = fit_final_clustering(features, cfg)
            pseudo_labels = result.labels
            metrics = score(processed, result, final_params, truth)
            flag_noise(result, final_params, len(processed))
            if (pseudo_labels >= 0).any():
                metrics.update(size_metrics(pseudo_labels[pseudo_labels >= 0], int(pseudo_labels.max()) + 1))
            tracking.log_metrics(metrics, step=epoch)
        else:
            final_params = cfg
        add_stability(processed, result, final_params, metrics, step=epoch)
        final = dict(metrics)
        log_results(cfg, dataset, model, features, processed, pseudo_labels, result.centroids, truth,
                    sizes_history, run.info.run_id, chain=chain, algorithm=final_params.algorithm)
        final.update(epochs_trained=epoch, run_id=run.info.run_id)
        tracking.log_metrics({"epochs_trained": epoch})
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in final.items() if v is not None}
    console.say("nscnet: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return final


def log_results(cfg: NscnetConfig, dataset: Dataset, model: torch.nn.Module, features: np.ndarray,
                processed: np.ndarray, labels: np.ndarray, centroids: np.ndarray | None, truth: np.ndarray | None,
                sizes_history: dict, run_id: str, *, chain: list | None, algorithm: str) -> None:
    """Figures, exports, and the model (`model/`: network, fitted chain, final clustering) of the active run."""
    if cfg.figures:
        log_figures(processed, labels, truth, seed=cfg.seed)
    if cfg.export:
        log_exports(dataset, labels, features, processed)  # assignments.csv, label tracks, embeddings.npy (raw), clustered.npy
    curves = {}
    for name in ("nmi_prev", "silhouette", "train_loss") + (("nmi_truth",) if truth is not None else ()):
        curves[name] = dict(tracking.metric_history(run_id, name))  # a resumed epoch logs twice: keep one
    steps = sorted(set().union(*[c.keys() for c in curves.values()]))
    tracking.log_figure(plots.metric_curve(steps, {n: [c.get(s) for s in steps] for n, c in curves.items()},
                                           "epoch", "NSCNet over epochs"), "epochs")
    tracking.log_dict({str(k): v for k, v in sorted(sizes_history.items())}, "cluster_sizes.json")
    if chain is None:  # the last epoch's post-processing, refitted on the final features (same seed: the same)
        pipeline, _ = build_postprocess(normalize=cfg.normalize, pca_dim=cfg.pca_dim, whiten=cfg.whiten, l2=cfg.l2,
                                        seed=cfg.seed, n_samples=len(features), n_features=features.shape[1])
        chain = [pipeline.fit(features)]
    cpu_model = model.to("cpu").to(memory_format=torch.contiguous_format).eval()
    log_model(STEP, dataset.image_shape, network=cpu_model, chain=chain, labels=labels, processed=processed,
              centroids=centroids, algorithm=algorithm,
              extra={"k": cfg.k, "head": "arcface" if cfg.arcface else "softmax", "amp": cfg.amp})
