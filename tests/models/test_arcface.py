"""ArcFace head: margin on the true class, safe near theta + m > pi, finite gradients."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nscnet.models.arcface import ArcFaceHead, SoftmaxHead, make_head


def _head_with_weights(weight: torch.Tensor, **kw) -> ArcFaceHead:
    head = ArcFaceHead(weight.shape[1], weight.shape[0], **kw)
    with torch.no_grad():
        head.weight.copy_(weight)
    return head


def test_margin_is_added_to_the_true_class_angle_only():
    head = _head_with_weights(torch.eye(2), scale=10.0, margin=0.3)
    angle = 0.4
    x = torch.tensor([[math.cos(angle), math.sin(angle)]])
    logits = head(x, torch.tensor([0]))
    assert math.isclose(logits[0, 0].item(), 10 * math.cos(angle + 0.3), rel_tol=1e-5)
    assert math.isclose(logits[0, 1].item(), 10 * math.cos(math.pi / 2 - angle), rel_tol=1e-5)
    inference = head(x)
    assert math.isclose(inference[0, 0].item(), 10 * math.cos(angle), rel_tol=1e-5)


def test_safe_beyond_pi_minus_margin_and_at_exact_alignment():
    margin = 0.5
    head = _head_with_weights(torch.eye(2), scale=30.0, margin=margin)
    angles = torch.tensor([0.0, math.pi - 0.2, math.pi, math.pi / 2])   # pi - 0.2: theta + m > pi
    x = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).requires_grad_(True)
    labels = torch.zeros(4, dtype=torch.long)
    logits = head(x, labels)
    true = logits[:, 0] / 30
    assert torch.isfinite(logits).all()
    # beyond the threshold the margin logit is the monotone fallback cos(theta) - m sin(m)
    expected = math.cos(math.pi - 0.2) - math.sin(math.pi - margin) * margin
    assert math.isclose(true[1].item(), expected, abs_tol=1e-5)
    assert true[2].item() <= true[1].item()       # never rises again as theta grows
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


def test_easy_margin_only_where_cosine_is_positive():
    head = _head_with_weights(torch.eye(2), scale=1.0, margin=0.5, easy_margin=True)
    x = torch.tensor([[-1.0, 0.2]])
    cos = F.normalize(x, dim=1)[0, 0].item()
    assert math.isclose(head(x, torch.tensor([0]))[0, 0].item(), cos, rel_tol=1e-5)


def test_arcface_learns_separable_classes_and_factory_builds_both():
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(3, 8), dim=1) * 3
    labels = torch.arange(3).repeat_interleave(20)
    x = centres[labels] + 0.3 * torch.randn(60, 8)
    head = make_head("arcface", 8, 3, scale=16.0, margin=0.3)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        loss = F.cross_entropy(head(x, labels), labels)
        loss.backward()
        optimizer.step()
    assert (head(x).argmax(1) == labels).float().mean() > 0.95
    assert isinstance(make_head("softmax", 8, 3), SoftmaxHead)
