"""Plotly figures of the analyses: observed vs expected Zipf ranks, accumulation, entropy histogram."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from nscnet.analysis.repertoire import Accumulation

MAX_BITS = float(np.log2(12))


def zipf_figure(sizes: np.ndarray, expected: np.ndarray, s: float, *, log_axes: bool, title: str = "") -> go.Figure:
    """Songs per type against rank, observed (markers) and finite-Zipf expected (line).

    `sizes`, `expected`: (N,) in rank order. Log-log axes turn a Zipf law into a straight line
    of slope -s (the paper's figures 24-25).
    """
    ranks = np.arange(1, len(sizes) + 1)
    fig = go.Figure()
    fig.add_scatter(x=ranks, y=sizes, mode="markers", name="observed")
    fig.add_scatter(x=ranks, y=expected, mode="lines", name=f"Zipf, s = {s:.3f}")
    kind = "log-log" if log_axes else "linear"
    fig.update_layout(title=title or f"Song-type usage against rank ({kind})",
                      xaxis_title="rank of the song type", yaxis_title="songs of this type",
                      template="plotly_white")
    if log_axes:
        fig.update_xaxes(type="log")
        fig.update_yaxes(type="log")
    return fig


def accumulation_figure(curve: Accumulation, estimates: dict[str, float] | None = None) -> go.Figure:
    """Distinct types against songs heard (mean and 95% band over random orders), with the
    richness estimates drawn as horizontal lines."""
    fig = go.Figure()
    fig.add_scatter(x=curve.songs, y=curve.high, mode="lines", line=dict(width=0), showlegend=False,
                    hoverinfo="skip")
    fig.add_scatter(x=curve.songs, y=curve.low, mode="lines", line=dict(width=0), fill="tonexty",
                    fillcolor="rgba(31,119,180,0.2)", name="95% of orders")
    fig.add_scatter(x=curve.songs, y=curve.mean, mode="lines", name="mean over random orders",
                    line=dict(color="rgb(31,119,180)"))
    for i, (name, value) in enumerate((estimates or {}).items()):
        if np.isfinite(value):
            fig.add_hline(y=value, line_dash="dash", annotation_text=f"{name} {value:.1f}",
                          annotation_position="bottom right" if i % 2 else "top right")
    fig.update_layout(title="Repertoire accumulation", xaxis_title="songs heard",
                      yaxis_title="distinct song types", template="plotly_white")
    return fig


def entropy_histogram(entropies: np.ndarray, *, bins: int = 40) -> go.Figure:
    """Histogram of per-segment chroma entropies in bits on [0, log2 12] (the paper's figure 4)."""
    values = np.asarray(entropies, dtype=float)
    values = values[np.isfinite(values)]
    fig = go.Figure()
    fig.add_histogram(x=values, xbins=dict(start=0.0, end=MAX_BITS, size=MAX_BITS / bins), name="segments")
    fig.add_vline(x=MAX_BITS, line_dash="dash", annotation_text="log2(12) = 3.58")
    mean = float(values.mean()) if len(values) else float("nan")
    fig.update_layout(title=f"Chromagram note entropy of {len(values)} segments (mean {mean:.2f} bits)",
                      xaxis_title="mean chroma entropy, bits", yaxis_title="segments",
                      template="plotly_white", bargap=0.02)
    fig.update_xaxes(range=[0, MAX_BITS + 0.1])
    return fig
