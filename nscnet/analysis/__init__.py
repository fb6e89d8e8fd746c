"""Analyses of a clustering: Zipf's law of song-type usage, repertoire size, note entropy.

- `zipf`: rank-ordered cluster sizes, finite-Zipf maximum-likelihood fit, goodness of fit
  (parametric-bootstrap KS, chi-squared), `powerlaw` comparisons; entry point `run_zipf`.
- `repertoire`: observed types, Chao1 and ACE estimates with confidence intervals,
  accumulation curves (logged by `run_zipf` in the same run).
- `entropy`: chromagram note entropy of every segment; entry point `run_entropy`.
- `plots`: the plotly figures of these analyses.
"""
