"""Star detection, measurement, masks, and the ``stars`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from astrosleuth_astro.cli import main
from astrosleuth_astro.sim import simulate, to_hdu
from astrosleuth_astro.stars import detect_stars, find_stars, star_mask


@pytest.fixture(scope="module")
def sim():
    # Isolated-enough Gaussian stars on a flat sky, a few of them saturated.
    return simulate(
        (96, 96),
        seed=7,
        psf="gaussian",
        fwhm=2.5,
        n_stars=30,
        flux_range=(2e3, 3e6),
        flux_index=1.0,
        nebulosity=0.0,
        hot_pixels=0.0,
    )


def _match(cat, truth, radius=1.0):
    from scipy.spatial import cKDTree

    d, i = cKDTree(np.column_stack([truth["x"], truth["y"]])).query(
        np.column_stack([cat["x"], cat["y"]])
    )
    return d, i, d < radius


def test_detects_and_measures_stars(sim):
    det = detect_stars(sim.lr)
    cat = det.catalog
    d, i, ok = _match(cat, sim.catalog)
    assert ok.sum() >= 0.9 * len(cat) and len(cat) >= 15
    bright = ok & (np.asarray(cat["snr"]) > 20) & ~np.asarray(cat["saturated"])
    assert bright.sum() >= 5
    assert np.median(d[bright]) < 0.05  # sub-pixel centroids
    assert det.fwhm == pytest.approx(2.5, rel=0.06)  # pixel-integrated Gaussian fits
    ratio = np.asarray(cat["flux"])[bright] / np.asarray(sim.catalog["flux"])[i[bright]]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.02)
    # Saturation: the flag follows the truth for matched stars.
    sat_truth = np.asarray(sim.catalog["saturated"])[i[ok]]
    assert sat_truth.any()
    np.testing.assert_array_equal(np.asarray(cat["saturated"])[ok], sat_truth)
    assert set(cat.colnames) >= {"x", "y", "fwhm", "flux", "peak", "background", "snr", "saturated"}
    # Footprints carry the catalogue ids.
    assert set(np.unique(det.segmentation)) - {0} == set(int(v) for v in cat["id"])


def test_known_saturation_level_and_hot_pixels():
    res = simulate(
        (64, 64),
        seed=2,
        psf="gaussian",
        n_stars=8,
        flux_range=(5e3, 2e4),
        nebulosity=0.0,
        hot_pixels=0.0,
    )
    lr = res.lr[0].copy()
    lr[10, 50] = 30000.0  # a hot pixel is not a star
    cat = find_stars(lr, saturation=2500.0)
    assert not np.any((np.abs(cat["x"] - 50) < 1) & (np.abs(cat["y"] - 10) < 1))
    assert cat["saturated"].any()  # the brightest stars pass the given level


def test_colour_and_tiny_images(sim):
    rgb = np.concatenate([sim.lr, 0.5 * sim.lr, 2.0 * sim.lr])
    assert len(find_stars(rgb)) == len(find_stars(sim.lr))
    # Too small for Background2D boxes: global statistics.
    tiny = sim.lr[0, :24, :24]
    cat = find_stars(tiny)
    assert len(cat) >= 1


def test_star_mask_dilates_footprints(sim):
    det = detect_stars(sim.lr)
    small = star_mask(det, factor=0.5)
    big = star_mask(det, factor=3.0)
    assert small.shape == sim.lr.shape[1:] and small.dtype == bool
    assert (det.segmentation > 0)[~small].sum() == 0  # every footprint pixel is masked
    assert big.sum() > small.sum() and not (small & ~big).any()
    up = star_mask(det, factor=2.0, scale=4)
    assert up.shape == (4 * 96, 4 * 96)
    for x, y in zip(det.catalog["x"], det.catalog["y"], strict=True):
        assert up[int(round((y + 0.5) * 4 - 0.5)), int(round((x + 0.5) * 4 - 0.5))]


def test_stars_cli_round_trip(tmp_path, sim, capsys):
    src = tmp_path / "field.fits"
    to_hdu(sim, "lr").writeto(src)
    mask_p, cat_p = tmp_path / "mask.fits", tmp_path / "stars.ecsv"
    rc = main(["stars", str(src), "--mask", str(mask_p), "--catalog", str(cat_p), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    cat = Table.read(cat_p, format="ascii.ecsv")
    assert summary["n_stars"] == len(cat) >= 15
    det = detect_stars(fits.getdata(src).astype(np.float32))
    np.testing.assert_allclose(cat["x"], det.catalog["x"], atol=1e-6)
    assert cat.meta["fwhm"] == pytest.approx(det.fwhm)
    with fits.open(mask_p) as hdul:
        mask, hdr = hdul[0].data, hdul[0].header
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    np.testing.assert_array_equal(mask.astype(bool), star_mask(det))
    # The input's header and WCS come along.
    src_hdr = fits.getheader(src)
    assert WCS(hdr).wcs.crval.tolist() == pytest.approx(WCS(src_hdr).wcs.crval.tolist())
    assert hdr["OBJECT"] == src_hdr["OBJECT"]
    # Existing outputs are kept unless --overwrite; a missing input is exit 2.
    assert main(["stars", str(src), "--mask", str(mask_p)]) == 2
    assert main(["stars", str(src), "--mask", str(mask_p), "--overwrite"]) == 0
    assert main(["stars", str(tmp_path / "nope.fits")]) == 2


@pytest.mark.parametrize(("centre", "sigma"), [(4.2, 0.8), (3.7, 2.1), (5.0, 0.35)])
def test_gaussian_fit_jacobian_matches_finite_differences(centre, sigma):
    """The star fits use analytic derivatives of the pixel-integrated Gaussian."""
    from astrosleuth_astro.stars.psf_fit import _pixel_gauss_1d, _pixel_gauss_1d_derivs

    c = np.arange(9.0)
    value, d_centre, d_logsig = _pixel_gauss_1d_derivs(c, centre, sigma)
    eps = 1e-6
    num_c = (_pixel_gauss_1d(c, centre + eps, sigma) - _pixel_gauss_1d(c, centre - eps, sigma)) / (
        2 * eps
    )
    num_l = (
        _pixel_gauss_1d(c, centre, sigma * np.exp(eps))
        - _pixel_gauss_1d(c, centre, sigma * np.exp(-eps))
    ) / (2 * eps)
    np.testing.assert_array_equal(value, _pixel_gauss_1d(c, centre, sigma))
    np.testing.assert_allclose(d_centre, num_c, atol=1e-8, rtol=0)
    np.testing.assert_allclose(d_logsig, num_l, atol=1e-8, rtol=0)
    assert np.abs(d_centre).max() > 0.05 and np.abs(d_logsig).max() > 0.05


def test_batched_gaussian_fits_match_one_by_one_least_squares():
    """fit_gaussians (all stars in one Levenberg-Marquardt) finds what scipy's
    least_squares finds for each stamp alone, and flags what cannot be fitted."""
    from scipy.optimize import least_squares

    from astrosleuth_astro.stars.psf_fit import _pixel_gauss_1d, fit_gaussians

    rng = np.random.default_rng(5)
    n, size = 40, 11
    coord = np.arange(size, dtype=np.float64)
    xs, ys = rng.uniform(3.5, 6.5, n), rng.uniform(3.5, 6.5, n)
    fw = rng.uniform(1.2, 4.0, n)
    stamps = np.zeros((n, size, size))
    for i in range(n):
        s = fw[i] / 2.3548
        img = 500 * np.outer(_pixel_gauss_1d(coord, ys[i], s), _pixel_gauss_1d(coord, xs[i], s))
        stamps[i] = img + rng.normal(0, 0.5, (size, size))
    good = np.ones((n, size, size), dtype=bool)
    good[0] = False  # nothing to fit
    good[1, :, 7:] = False  # an image edge: a 11 x 7 stamp
    ny, nx = np.full(n, size), np.full(n, size)
    nx[1] = 7
    fx, fy, ff = fit_gaussians(stamps, good, np.full(n, 5.0), np.full(n, 5.0), 2.5, (ny, nx))
    assert np.isnan([fx[0], fy[0], ff[0]]).all()
    for i in range(1, n):
        g, vals = good[i], stamps[i][good[i]]

        def resid(p, g=g, vals=vals):
            sig = np.exp(p[3])
            m = p[0] * np.outer(
                _pixel_gauss_1d(coord, p[2], sig), _pixel_gauss_1d(coord, p[1], sig)
            )
            return m[g] - vals

        ref = least_squares(resid, [vals.sum(), 5.0, 5.0, np.log(2.5 / 2.3548)], method="lm")
        ref = least_squares(resid, ref.x, method="lm", xtol=1e-14, ftol=1e-14)
        assert abs(fx[i] - ref.x[1]) < 1e-4 and abs(fy[i] - ref.x[2]) < 1e-4
        assert abs(ff[i] - 2.3548 * np.exp(ref.x[3])) < 1e-4
        # ... and close to the truth (noise 0.1 % of the peak)
        assert abs(fx[i] - xs[i]) < 0.05 and abs(ff[i] - fw[i]) < 0.1 * fw[i]


def test_batched_gaussian_fits_survive_degenerate_stamps():
    """Degenerate stamps (empty, negative, constant) do not stop the batch: a negative
    one is a failed fit (NaN) and the star beside them is fitted as alone."""
    from astrosleuth_astro.stars.psf_fit import _pixel_gauss_1d, fit_gaussians

    size = 9
    c = np.arange(size, dtype=np.float64)
    star = 300 * np.outer(_pixel_gauss_1d(c, 4.3, 1.1), _pixel_gauss_1d(c, 3.8, 1.1))
    stamps = np.stack([np.zeros((size, size)), -np.ones((size, size)), star, np.ones((size, size))])
    good = np.ones(stamps.shape, dtype=bool)
    x, y, f = fit_gaussians(stamps, good, np.full(4, 4.0), np.full(4, 4.0), 2.5)
    assert np.isnan(x[1]) and np.isnan(f[1])
    assert abs(x[2] - 3.8) < 1e-6 and abs(y[2] - 4.3) < 1e-6 and abs(f[2] - 2.3548 * 1.1) < 1e-5


def _blobs(shape, centres, sigma, amps):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape)
    for (cy, cx), a in zip(centres, amps, strict=True):
        img += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return img


def test_count_peaks_counts_significant_maxima_only():
    from astrosleuth_astro.stars import count_peaks

    region = np.ones((40, 60), dtype=bool)
    one = _blobs((40, 60), [(20, 30)], 3.0, [1.0])
    assert count_peaks(one, region, 0.05) == 1
    two = _blobs((40, 60), [(20, 15), (20, 45)], 3.0, [1.0, 0.6])
    assert count_peaks(two, region, 0.05) == 2
    # The fainter maximum stands 0.6 above the saddle: it needs h below that to count.
    assert count_peaks(two, region, 0.7) == 1
    # Two close cores whose dip is shallower than h are one peak.
    close = _blobs((40, 60), [(20, 26.5), (20, 33.5)], 3.0, [1.0, 0.97])
    dip = close[20, 30:].max() - close[20, 27:34].min()  # the fainter core's dynamic
    assert 0 < dip < 0.1
    assert count_peaks(close, region, 1.5 * dip) == 1
    assert count_peaks(close, region, dip / 2) == 2
    # A flat top counts once; outside the region nothing counts.
    flat = np.minimum(one, 0.5)
    assert count_peaks(flat, region, 0.05) == 1
    left = np.zeros_like(region)
    left[:, :30] = True
    assert count_peaks(two, left, 0.05) == 1
    assert count_peaks(two, np.zeros_like(region), 0.05) == 0


def test_count_peaks_in_a_region_equals_h_maxima_on_the_whole_stamp():
    """count_peaks works on the region's bounding box; on noisy stamps with irregular
    regions it must count what skimage's h_maxima counts on the whole stamp."""
    from scipy import ndimage
    from skimage.morphology import h_maxima

    from astrosleuth_astro.stars import count_peaks

    rng = np.random.default_rng(7)
    single_maximum = 0  # cases count_peaks answers without h_maxima
    for trial in range(80):
        shape = (int(rng.integers(20, 50)), int(rng.integers(20, 50)))
        if trial % 2:
            img = _blobs(shape, rng.uniform(5, 15, size=(3, 2)), 2.5, rng.uniform(0.2, 1, 3))
            img += rng.normal(0, 0.03, shape)
            region = ndimage.binary_dilation(
                rng.random(shape) > 0.985, iterations=int(rng.integers(2, 6))
            )
        else:  # one smooth star and its footprint, as in a network's output
            img = _blobs(shape, rng.uniform(8, 12, size=(1, 2)), 2.5, [1.0])
            img += rng.normal(0, 1e-4, shape)
            region = img > 0.05
        h = float(rng.uniform(0.02, 0.2))
        if not region.any():
            continue
        work = np.where(region, img, img[region].min() - h)
        peaks = h_maxima(work, h).astype(bool) & region
        expected = ndimage.label(peaks, structure=np.ones((3, 3)))[1]
        assert count_peaks(img, region, h) == expected, trial
        local = work >= ndimage.maximum_filter(work, size=3, mode="constant", cval=-np.inf)
        single_maximum += int(np.count_nonzero(local & region) == 1)
    assert single_maximum >= 20
    # A region that fills its bounding box, on a stamp whose values inside it span less
    # than h: the whole stamp has lower pixels around it, so its maximum counts.
    img = 1.0 + 0.01 * rng.random((20, 20))
    region = np.zeros((20, 20), dtype=bool)
    region[5:9, 6:12] = True
    assert np.ptp(img[region]) < 0.1
    work = np.where(region, img, img[region].min() - 0.1)
    assert ndimage.label(h_maxima(work, 0.1).astype(bool) & region)[1] == 1
    assert count_peaks(img, region, 0.1) == 1


def test_deblending_only_multi_peak_segments_gives_the_same_segmentation():
    """_segment deblends only segments with two or more local maxima; photutils must
    return exactly what deblending every segment returns, labels included."""
    import warnings

    from photutils.segmentation import deblend_sources, detect_sources

    from astrosleuth_astro.stars.background import smooth_psf
    from astrosleuth_astro.stars.peaks import _deblend_candidates

    rng = np.random.default_rng(3)
    shape = (160, 200)
    n = 120  # crowded: many pairs closer than a few FWHM
    centres = np.column_stack([rng.uniform(5, shape[0] - 5, n), rng.uniform(5, shape[1] - 5, n)])
    img = _blobs(shape, centres, 1.3, rng.uniform(5, 60, n)) + rng.normal(0, 1.0, shape)
    smooth = smooth_psf(img, 3.0)
    segm = detect_sources(smooth, 3 * smooth.std() / 3, 5)
    candidates = _deblend_candidates(smooth, segm.data)
    assert 0 < candidates.size < segm.n_labels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        every = deblend_sources(smooth, segm, 5, progress_bar=False)
        some = deblend_sources(smooth, segm, 5, labels=candidates, progress_bar=False)
    assert every.n_labels > segm.n_labels  # something was split
    np.testing.assert_array_equal(some.data, every.data)


def test_flat_sigma_clip_matches_astropy_sigma_clip_on_2d_cutouts():
    from astropy.stats import SigmaClip

    from astrosleuth_astro.stars.background import FlatSigmaClip

    rng = np.random.default_rng(11)
    for trial in range(30):
        shape = (int(rng.integers(3, 30)), int(rng.integers(3, 30)))
        data = rng.normal(100, 5, shape)
        hot = rng.random(shape) < 0.05
        data[hot] += rng.uniform(30, 300, hot.sum())  # outliers to clip
        mask = rng.random(shape) < 0.3
        cutout = np.ma.masked_array(data, mask=mask)
        ours = FlatSigmaClip(sigma=3.0, maxiters=10)(cutout)
        ref = SigmaClip(sigma=3.0, maxiters=10)(cutout)
        assert ours.shape == shape
        np.testing.assert_array_equal(ours.mask, ref.mask, err_msg=str(trial))
        np.testing.assert_array_equal(ours.filled(0.0), ref.filled(0.0))
    assert ref.mask.sum() > mask.sum()  # the outliers were clipped
