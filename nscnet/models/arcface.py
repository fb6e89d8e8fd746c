"""Classifier heads on the embedding: plain softmax (a linear layer) and ArcFace.

ArcFace (Deng et al. 2019): logits are s * cos(theta_j) between the L2-normalised embedding
and the L2-normalised class weights, with an additive angular margin m on the true class:
s * cos(theta_y + m). Both heads take (embeddings, labels) and return logits for
cross-entropy; at inference (labels None) ArcFace returns s * cos(theta) without margin.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class SoftmaxHead(nn.Linear):
    """Linear layer: (B, D) -> (B, K) logits for softmax cross-entropy."""

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(embeddings)


class ArcFaceHead(nn.Module):
    """Additive angular margin head: (B, D), (B,) -> (B, K) logits.

    Numerically safe: cos is clamped away from +-1 before the square root, and where
    theta + m would pass pi (cos(theta + m) would rise again) the margin logit is replaced by
    the monotone cos(theta) - m sin(m) (the insightface threshold trick); `easy_margin`
    applies the margin only where cos(theta) > 0. Computed in float32 even under autocast.
    """

    def __init__(self, in_features: int, n_classes: int, *, scale: float = 30.0, margin: float = 0.5,
                 easy_margin: bool = False, eps: float = 1e-7):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin, self.easy_margin, self.eps = float(scale), float(margin), easy_margin, eps
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.threshold = math.cos(math.pi - margin)     # cos(theta) below this: theta + m > pi
        self.fallback = math.sin(math.pi - margin) * margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, K) cos(theta) in [-1 + eps, 1 - eps]."""
        cos = F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))
        return cos.clamp(-1.0 + self.eps, 1.0 - self.eps)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = self.cosine(embeddings)
            if labels is None:
                return self.scale * cos
            sin = torch.sqrt((1.0 - cos * cos).clamp_min(0.0))
            cos_margin = cos * self.cos_m - sin * self.sin_m          # cos(theta + m)
            if self.easy_margin:
                cos_margin = torch.where(cos > 0, cos_margin, cos)
            else:
                cos_margin = torch.where(cos > self.threshold, cos_margin, cos - self.fallback)
            one_hot = F.one_hot(labels.long(), cos.shape[1]).to(torch.bool)
            return self.scale * torch.where(one_hot, cos_margin, cos)


def make_head(kind: str, in_features: int, n_classes: int, *, scale: float = 30.0, margin: float = 0.5) -> nn.Module:
    """`softmax` or `arcface` head with freshly initialised weights."""
    if kind == "arcface":
        return ArcFaceHead(in_features, n_classes, scale=scale, margin=margin)
    if kind == "softmax":
        return SoftmaxHead(in_features, n_classes)
    raise ValueError(f"head={kind!r} is not softmax or arcface")
