"""Post-processing pipeline: order of steps, clamping of pca_dim, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from nscnet.config import ClusterParams, DataError, PostprocessParams
from nscnet.features.postprocess import build_postprocess, postprocess


def data(n=60, d=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.linspace(5, 0.1, d) + 3.0


def test_pipeline_steps_follow_the_design_order():
    pipe, notes = build_postprocess(normalize=True, pca_dim=8, whiten=True, l2=True, seed=0, n_samples=60, n_features=20)
    assert [name for name, _ in pipe.steps] == ["normalize", "pca", "l2"]
    assert notes == {"pca_dim_used": 8, "pca_clamped": False}
    pipe, notes = build_postprocess(normalize=False, pca_dim=0, whiten=False, l2=False, seed=0, n_samples=60, n_features=20)
    assert [name for name, _ in pipe.steps] == ["identity"] and notes["pca_dim_used"] == 0


def test_whitened_pca_has_unit_variance_and_l2_gives_unit_rows():
    x = data()
    out, _ = postprocess(x, PostprocessParams(pca_dim=5, whiten=True, l2=False))
    assert out.shape == (60, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out.var(axis=0, ddof=1), 1.0, rtol=1e-3)
    out, _ = postprocess(x, PostprocessParams(pca_dim=5, whiten=False, l2=True))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    # plain PCA keeps the variance order of the data: first component the widest
    out, _ = postprocess(x, PostprocessParams(pca_dim=5, whiten=False, l2=False))
    assert np.all(np.diff(out.var(axis=0)) < 0)


def test_normalize_standardizes_before_pca():
    x = data()
    out, _ = postprocess(x, PostprocessParams(normalize=True, pca_dim=0, whiten=False, l2=False))
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=0), 1, rtol=1e-3)


def test_pca_dim_is_clamped_to_samples_and_features_and_said_so(caplog):
    out, notes = postprocess(data(n=30, d=20), PostprocessParams(pca_dim=128, whiten=False))
    assert out.shape == (30, 20) and notes["pca_dim_used"] == 20 and notes["pca_clamped"]
    out, notes = postprocess(data(n=10, d=20), PostprocessParams(pca_dim=128, whiten=False))
    assert out.shape == (10, 9) and notes["pca_dim_used"] == 9 and notes["pca_clamped"]
    assert "clamped to 9" in caplog.text


def test_whitening_close_to_n_components_is_clamped_and_warned_about():
    out, notes = postprocess(data(n=50, d=60), PostprocessParams(pca_dim=49, whiten=True, l2=True))
    assert "equally far" in notes["warning"] and "clamped to 12" in notes["warning"]
    assert out.shape == (50, 12) and notes["pca_dim_used"] == 12 and notes["pca_clamped"]
    assert np.isfinite(out).all()
    _, notes = postprocess(data(n=500, d=60), PostprocessParams(pca_dim=49, whiten=True))
    assert "warning" not in notes


def test_cluster_params_are_accepted_as_postprocess_params():
    out, _ = postprocess(data(), ClusterParams(pca_dim=4))
    assert out.shape == (60, 4)


@pytest.mark.parametrize("features, word", [
    (np.ones((1, 5)), "at least 2 segments"),
    (np.full((20, 5), 0.5), "identical"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN"),
    (np.ones(5), "2-D"),
])
def test_bad_input_is_a_clear_data_error(features, word):
    with pytest.raises(DataError, match=word):
        postprocess(features, PostprocessParams())


def test_postprocess_images_reads_in_chunks_and_fits_on_a_sample():
    from nscnet.config import BasenetConfig
    from nscnet.features.postprocess import pca_fit_rows, postprocess_images

    rng = np.random.default_rng(0)
    basis = rng.normal(size=(6, 8 * 16)).astype(np.float32)
    images = (rng.normal(size=(700, 6)).astype(np.float32) @ basis).reshape(700, 8, 16).astype(np.float16)
    params = BasenetConfig(pca_dim=6, whiten=False, l2=False)
    whole, notes = postprocess_images(images, params, chunk=128)  # all rows fit: the plain fit
    plain, _ = postprocess(images.reshape(700, -1).astype(np.float32), params)
    assert notes["pca_fit_rows"] == 700 and np.allclose(whole, plain, atol=1e-4)
    sample, notes = postprocess_images(images, params, fit_rows=100, chunk=128)
    assert notes["pca_fit_rows"] == 100 and sample.shape == (700, 6) and sample.dtype == np.float32
    # a rank-6 signal: the 6 components fitted on 100 rows span the same space (same variance kept)
    assert sample.var(axis=0).sum() == pytest.approx(plain.var(axis=0).sum(), rel=1e-3)
    assert pca_fit_rows(100_000, 64 * 512) == 8192 and pca_fit_rows(7652, 64 * 128) == 7652
