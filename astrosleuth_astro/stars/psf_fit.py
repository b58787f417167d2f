"""Least-squares fits of circular Gaussians integrated over each pixel (centroids and FWHM)."""

from __future__ import annotations

import numpy as np


def _pixel_gauss_1d(coord: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    """Integral over each unit pixel of a unit-area 1-D Gaussian."""
    from scipy.special import erf

    s = np.sqrt(2.0) * sigma
    return 0.5 * (erf((coord + 0.5 - centre) / s) - erf((coord - 0.5 - centre) / s))


def _pixel_gauss_1d_derivs(
    coord: np.ndarray, centre: float, sigma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_pixel_gauss_1d` and its derivatives by ``centre`` and by ``log(sigma)``."""
    from scipy.special import erf

    s = np.sqrt(2.0) * sigma
    a, b = (coord + 0.5 - centre) / s, (coord - 0.5 - centre) / s
    ea, eb = np.exp(-a * a), np.exp(-b * b)
    value = 0.5 * (erf(a) - erf(b))
    d_centre = -(ea - eb) / (np.sqrt(2.0 * np.pi) * sigma)
    d_logsig = -(a * ea - b * eb) / np.sqrt(np.pi)
    return value, d_centre, d_logsig


#: Stars fitted together in one batch of :func:`fit_gaussians` (bounds its memory:
#: about 4 kB per star for an 11x11 stamp, 36 kB for 33x33).
FIT_BATCH = 1024


#: Levenberg-Marquardt iteration limit and relative cost-change tolerance of the fits.
FIT_MAX_ITER = 200


FIT_TOL = 1e-10


#: ... and the step (pixels, log sigma, flux / starting flux) below which a fit is done.
FIT_STEP_TOL = 1e-7


def fit_gaussians(
    stamps: np.ndarray,
    good: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    fwhm0: float,
    extent: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares fits of pixel-integrated circular Gaussians to many stamps at once.

    Levenberg-Marquardt on every star together: one iteration is a few array operations
    over the stars still being fitted, so a thousand stars cost about what a handful cost
    fitted one by one with :func:`scipy.optimize.least_squares`.

    Parameters
    ----------
    stamps : ndarray, shape (N, S, S)
        Background-subtracted stamps (data units). A smaller stamp (at an image edge) sits
        in the top-left corner, the rest flagged bad.
    good : ndarray of bool, shape (N, S, S)
        Pixels that take part in the fit.
    x0, y0 : ndarray, shape (N,)
        Starting centres, stamp pixels.
    fwhm0 : float
        Starting FWHM, pixels.
    extent : (ny, nx), optional
        Each stamp's real height and width (default S): a centre more than a pixel
        outside it is a failed fit.

    Returns
    -------
    x, y, fwhm : ndarray, shape (N,)
        Fitted centres (stamp pixels) and FWHM (pixels); NaN where the fit failed (fewer
        than 6 good pixels, no convergence, non-positive flux, centre off the stamp or an
        implausible width).
    """
    n, size = stamps.shape[0], stamps.shape[1]
    ny, nx = extent if extent is not None else (np.full(n, size), np.full(n, size))
    out = np.full((3, n), np.nan)
    for b0 in range(0, n, FIT_BATCH):
        sl = slice(b0, min(n, b0 + FIT_BATCH))
        out[:, sl] = _fit_batch(stamps[sl], good[sl], x0[sl], y0[sl], fwhm0)
    with np.errstate(invalid="ignore"):
        inside = (out[0] >= -1) & (out[0] <= nx) & (out[1] >= -1) & (out[1] <= ny)
    out[:, ~inside] = np.nan
    return out[0], out[1], out[2]


def _gauss_model(
    p: np.ndarray, coord: np.ndarray, want_jac: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Flattened pixel-integrated Gaussians of parameters ``p`` (N, 4) and, if asked, their
    Jacobian (N, S*S, 4) by (flux, x, y, log sigma)."""
    n = p.shape[0]
    sig = np.exp(p[:, 3])[:, None]
    flux = p[:, 0][:, None, None]
    if not want_jac:  # the trial steps need only the values
        gy, gx = (
            _pixel_gauss_1d(coord[None], p[:, 2:3], sig),
            _pixel_gauss_1d(coord[None], p[:, 1:2], sig),
        )
        return (flux * gy[:, :, None] * gx[:, None, :]).reshape(n, -1), None
    gy, dgy_c, dgy_l = _pixel_gauss_1d_derivs(coord[None], p[:, 2:3], sig)
    gx, dgx_c, dgx_l = _pixel_gauss_1d_derivs(coord[None], p[:, 1:2], sig)
    unit = gy[:, :, None] * gx[:, None, :]
    model = (flux * unit).reshape(n, -1)
    cols = (
        unit,
        flux * gy[:, :, None] * dgx_c[:, None, :],
        flux * dgy_c[:, :, None] * gx[:, None, :],
        flux * (dgy_l[:, :, None] * gx[:, None, :] + gy[:, :, None] * dgx_l[:, None, :]),
    )
    return model, np.stack([c.reshape(n, -1) for c in cols], axis=2)


def _solve_or_nan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a x = b`` for one star, NaN (a failed fit) when ``a`` is singular or not finite."""
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return np.full(b.shape, np.nan)


def _fit_batch(
    stamps: np.ndarray, good: np.ndarray, x0: np.ndarray, y0: np.ndarray, fwhm0: float
) -> np.ndarray:
    """:func:`fit_gaussians` on one batch: ``(3, N)`` rows x, y, fwhm (NaN = failed)."""
    n, size, _ = stamps.shape
    coord = np.arange(size, dtype=np.float64)
    good_f = good.reshape(n, -1)
    vals = np.where(good, stamps, 0.0).reshape(n, -1).astype(np.float64)
    flux0 = np.maximum(np.sum(np.clip(vals, 0, None), axis=1), 1e-12)
    # Residuals in units of the starting flux and parameters scaled by (flux0, 1, 1, 1),
    # as the one-star fits did with least_squares(x_scale=...).
    weight = good_f / flux0[:, None]
    scale = np.stack([flux0, np.ones(n), np.ones(n), np.ones(n)], axis=1)
    p = np.stack([flux0, x0, y0, np.full(n, np.log(max(fwhm0 / 2.3548, 0.3)))], axis=1)
    lam = np.full(n, 1e-3)
    converged = np.zeros(n, dtype=bool)
    active = np.flatnonzero(good_f.sum(axis=1) >= 6)
    eye = np.eye(4)
    with np.errstate(all="ignore"):
        for _ in range(FIT_MAX_ITER):
            if active.size == 0:
                break
            w, sc, pa = weight[active], scale[active], p[active]
            model, jac = _gauss_model(pa, coord, True)
            r = (model - vals[active]) * w
            jac *= (w[:, :, None]) * sc[:, None, :]
            cost = np.einsum("ij,ij->i", r, r)
            jtj = np.einsum("nki,nkj->nij", jac, jac)
            grad = np.einsum("nki,nk->ni", jac, r)
            # Marquardt's damping of the diagonal, and a relative ridge for a Jacobian
            # that lost rank (flux gone to 0: the fit is rejected afterwards).
            ridge = 1e-12 * np.trace(jtj, axis1=1, axis2=2)[:, None, None] * eye
            damp = jtj + lam[active, None, None] * jtj * eye + ridge
            try:
                step = -np.linalg.solve(damp, grad[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:  # a star whose Jacobian vanished: one by one
                step = -np.stack([_solve_or_nan(a, b) for a, b in zip(damp, grad, strict=True)])
            trial = pa + step * sc
            model_t, _ = _gauss_model(trial, coord, False)
            r_t = (model_t - vals[active]) * w
            cost_t = np.einsum("ij,ij->i", r_t, r_t)
            better = np.isfinite(cost_t) & (cost_t <= cost)
            p[active[better]] = trial[better]
            lam[active] = np.where(better, lam[active] / 3.0, lam[active] * 2.0)
            rel = np.abs(cost - cost_t) / np.maximum(cost, 1e-300)
            finite = np.isfinite(step).all(axis=1)
            # At a minimum: the cost stopped falling, or no step is worth taking.
            tiny = np.max(np.abs(step), axis=1) < FIT_STEP_TOL
            settled = (better & (rel < FIT_TOL) & tiny) | (tiny & (lam[active] < 1.0))
            done = ~finite | settled | (lam[active] > 1e12)
            converged[active[done]] = finite[done]
            active = active[~done]
    flux, fwhm = p[:, 0], 2.3548 * np.exp(p[:, 3])
    with np.errstate(invalid="ignore"):
        ok = converged & (flux > 0) & (fwhm > 0.05) & (fwhm < 5.0 * max(fwhm0, 1.0) + 2.0)
    return np.where(ok, np.stack([p[:, 1], p[:, 2], fwhm]), np.nan)
