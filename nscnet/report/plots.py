"""Plotly figures of clusterings: pure functions, arrays in, `plotly.graph_objects.Figure` out.

- `lda_projection`: 2-D linear discriminant projection coloured by cluster (as in the paper);
  PCA projection when LDA cannot be fitted (fewer than 3 clusters, ...).
- `cluster_sizes`: rank-ordered cluster sizes (the input of the Zipf analysis).
- `contingency`: clusters against reference labels, as a heatmap.
- `metric_curve`: one or more metrics against a swept value (K, min_samples, epoch).

Logging them is `nscnet.runs.tracking.log_figure`'s job (HTML + PNG under `figures/`).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics.cluster import contingency_matrix

log = logging.getLogger(__name__)

NOISE = -1
MAX_LEGEND = 30        # more clusters than this: one trace, continuous colour scale
MAX_FIT_POINTS = 5000  # LDA / PCA fitted on a seeded sample above this (a 2-D view needs no more)


def _project(features: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """(N, 2) projection and the method used: LDA on non-noise points, else PCA."""
    x = np.asarray(features, dtype=np.float64)
    if x.shape[1] < 2:
        x = np.hstack([x, np.zeros((len(x), 2 - x.shape[1]))])
    keep = np.flatnonzero(labels != NOISE)
    if len(keep) > MAX_FIT_POINTS:
        keep = np.random.default_rng(seed).choice(keep, MAX_FIT_POINTS, replace=False)
    if len(np.unique(labels[keep])) >= 3:
        try:
            lda = LinearDiscriminantAnalysis(n_components=2).fit(x[keep], labels[keep])
            projected = lda.transform(x)
            if projected.shape[1] == 2 and np.isfinite(projected).all():
                return projected, "LDA"
        except (ValueError, np.linalg.LinAlgError) as exc:
            log.info("LDA projection failed (%s); using PCA", exc)
    fit_rows = np.arange(len(x)) if len(x) <= MAX_FIT_POINTS else \
        np.random.default_rng(seed).choice(len(x), MAX_FIT_POINTS, replace=False)
    pca = PCA(n_components=2, random_state=seed).fit(x[fit_rows])
    return pca.transform(x), "PCA"


def lda_projection(features: np.ndarray, labels: np.ndarray, *, title: str = "", seed: int = 0) -> go.Figure:
    """Scatter of features (N, D) projected to 2-D, coloured by cluster labels (N,); -1 grey."""
    labels = np.asarray(labels)
    xy, method = _project(features, labels, seed)
    fig = go.Figure()
    clusters = np.unique(labels[labels != NOISE])
    noise = labels == NOISE
    if noise.any():
        fig.add_trace(go.Scattergl(x=xy[noise, 0], y=xy[noise, 1], mode="markers", name="noise",
                                   marker=dict(size=3, color="lightgrey")))
    if len(clusters) <= MAX_LEGEND:
        for c in clusters:
            rows = labels == c
            fig.add_trace(go.Scattergl(x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=f"cluster {c}",
                                       marker=dict(size=4)))
    else:
        rows = ~noise
        # hover text from customdata (one array) rather than a list of N strings: plotly
        # validates lists element by element, a large share of a study trial's figure time
        fig.add_trace(go.Scattergl(x=xy[rows, 0], y=xy[rows, 1], mode="markers", name="clusters",
                                   customdata=labels[rows], hovertemplate="cluster %{customdata}<extra></extra>",
                                   marker=dict(size=3, color=labels[rows], colorscale="Turbo",
                                               colorbar=dict(title="cluster"))))
    fig.update_layout(title=title or f"{method} projection of the features ({len(clusters)} clusters)",
                      xaxis_title=f"{method} 1", yaxis_title=f"{method} 2", template="plotly_white")
    return fig


def cluster_sizes(labels: np.ndarray, *, title: str = "") -> go.Figure:
    """Bar chart of cluster sizes, largest first, log-scaled counts; noise left out (named in title)."""
    labels = np.asarray(labels)
    ids, counts = np.unique(labels[labels != NOISE], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    ranks = np.arange(1, len(ids) + 1)
    noise = int(np.sum(labels == NOISE))
    fig = go.Figure(go.Bar(x=ranks, y=counts[order], text=[f"cluster {c}" for c in ids[order]],
                           hovertemplate="rank %{x}: %{text}, %{y} segments<extra></extra>"))
    extra = f", {noise} noise" if noise else ""
    fig.update_layout(title=title or f"Cluster sizes by rank ({len(ids)} clusters{extra})",
                      xaxis_title="rank", yaxis_title="segments", yaxis_type="log", template="plotly_white")
    return fig


def contingency(labels: np.ndarray, truth: Sequence[Any], *, title: str = "") -> go.Figure:
    """Heatmap of segment counts: clusters (rows, grouped by their majority label) x labels."""
    labels = np.asarray(labels)
    truth = np.asarray(truth).astype(str)
    clusters = np.unique(labels)
    names = np.unique(truth)
    table = contingency_matrix(labels, truth)  # rows: sorted clusters, columns: sorted labels
    order = np.lexsort((-table.max(axis=1), table.argmax(axis=1)))
    rows = ["noise" if c == NOISE else f"cluster {c}" for c in clusters[order]]
    fig = go.Figure(go.Heatmap(z=table[order], x=list(names), y=rows, colorscale="Viridis",
                               colorbar=dict(title="segments"),
                               hovertemplate="%{y}, label %{x}: %{z}<extra></extra>"))
    fig.update_layout(title=title or "Clusters against reference labels", xaxis_title="reference label",
                      yaxis_title="cluster", yaxis_autorange="reversed", xaxis_type="category",
                      yaxis_type="category", template="plotly_white")
    return fig


def metric_curve(x: Sequence[float], series: Mapping[str, Sequence[float | None]], xlabel: str,
                 title: str, *, log_x: bool = False) -> go.Figure:
    """One panel per metric against x (shared x axis); None values are gaps, not zeros."""
    names = list(series)
    fig = make_subplots(rows=max(len(names), 1), cols=1, shared_xaxes=True, subplot_titles=names,
                        vertical_spacing=0.08)
    for row, name in enumerate(names, start=1):
        values = [np.nan if v is None else float(v) for v in series[name]]
        fig.add_trace(go.Scatter(x=list(x), y=values, mode="lines+markers", name=name), row=row, col=1)
        fig.update_yaxes(title_text=name, row=row, col=1)
    fig.update_xaxes(title_text=xlabel, row=len(names), col=1)
    if log_x:
        fig.update_xaxes(type="log", tickvals=list(x))  # ticks at the swept values (powers of 2)
    fig.update_layout(title=title, showlegend=False, template="plotly_white", height=250 + 220 * len(names))
    return fig
