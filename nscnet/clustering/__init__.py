"""Clustering and its evaluation: k-means / OPTICS / HDBSCAN, metrics, label-free selection, logging."""
