"""Image features to clustering input: PCA / whitening / L2 post-processing and UMAP reduction."""
