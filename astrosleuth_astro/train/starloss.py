"""The star-aware loss: dark rings ("star shadows") and flux changes around stars.

Both terms use the star maps of the HR target (:mod:`.starmask`), carried in the batch:
plane 0 is the distance to the nearest star footprint in LR pixels (0 inside), plane 1 the
label of that footprint.

``ring``
    Mean of ``relu(target - pred)`` over the ring zone ``0 < d <= ring`` (stretched domain,
    per pixel and channel): an output *darker* than the target just outside a star is what
    a star shadow is; an output brighter there costs nothing here (the pixel loss and the
    flux term see it).
``flux``
    For each star (footprint grown by ``radius`` LR pixels, labelled by the nearest
    footprint), the linear flux above the sky of the output and of the target, summed over
    the channels; the term is the mean relative difference ``|F_pred - F_target| / F_target``
    over the stars, weighted by ``sqrt(F_target / span)`` (``span``: the sample's white
    minus black point), so bright stars count more without drowning the rest. Linear data
    comes from the differentiable inverse stretch :func:`inverse_stretch`; the sky is the
    target's per-channel median outside every star zone, the same for output and target.
"""

from __future__ import annotations

import torch

from .data import STRETCH_KINDS


def _stretch_params(vec: torch.Tensor, kind: torch.Tensor, device: torch.device) -> tuple:
    """Black, white, kind masks and safe mtf / asinh parameters, shaped for (N, C, H, W)."""
    vec = vec.to(torch.float32)
    black, white, p = (vec[:, i, :, None, None] for i in range(3))
    k = kind.to(device).view(-1, 1, 1, 1)
    is_mtf = k == STRETCH_KINDS["mtf"]
    is_asinh = k == STRETCH_KINDS["asinh"]
    # Safe parameters where a kind does not apply, so no branch makes inf/NaN (whose
    # gradients would poison torch.where).
    m = torch.where(is_mtf, p, torch.full_like(p, 0.5))
    a = torch.where(is_asinh, p, torch.ones_like(p))
    return black, white, is_mtf, is_asinh, m, a


def inverse_stretch(y: torch.Tensor, vec: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """Differentiable inverse of :meth:`astrosleuth_astro.stretch.Stretch.inverse`.

    Parameters
    ----------
    y : Tensor, shape (N, C, H, W)
        Stretched values; clamped to [0, 1] first, as ``Stretch.inverse`` does.
    vec : Tensor, shape (N, 3, C)
        Per sample and channel: black point, white point (linear input units) and the
        stretch parameter (``mtf``: midtone balance m; ``asinh``: softening a).
    kind : Tensor of int, shape (N,)
        Codes of :data:`astrosleuth_astro.train.data.STRETCH_KINDS`.

    Returns
    -------
    Tensor of float32, shape (N, C, H, W)
        Linear values in the input units of each sample.
    """
    v = y.float().clamp(0.0, 1.0)
    black, white, is_mtf, is_asinh, m, a = _stretch_params(vec, kind, v.device)
    # mtf(v, 1 - m) = m v / ((2m - 1) v + 1 - m); the denominator is in [min(m, 1-m), 1].
    u_mtf = m * v / ((2.0 * m - 1.0) * v + 1.0 - m)
    u_asinh = a * torch.sinh(v * torch.asinh(1.0 / a))
    u = torch.where(is_mtf, u_mtf, torch.where(is_asinh, u_asinh, v))
    return u * (white - black) + black


def forward_stretch(u: torch.Tensor, vec: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """Differentiable :meth:`astrosleuth_astro.stretch.Stretch.forward`: the inverse of
    :func:`inverse_stretch` (same arguments; linear in, stretched in [0, 1] out)."""
    black, white, is_mtf, is_asinh, m, a = _stretch_params(vec, kind, u.device)
    v = ((u.float() - black) / (white - black).clamp_min(1e-30)).clamp(0.0, 1.0)
    # mtf(v, m) = (m - 1) v / ((2m - 1) v - m); the denominator is in [-1, -min(m, 1-m)].
    y_mtf = (m - 1.0) * v / ((2.0 * m - 1.0) * v - m)
    y_asinh = torch.asinh(v / a) / torch.asinh(1.0 / a)
    return torch.where(is_mtf, y_mtf, torch.where(is_asinh, y_asinh, v))


def ring_term(
    pred: torch.Tensor, target: torch.Tensor, dist: torch.Tensor, ring: float
) -> torch.Tensor:
    """Mean one-sided darkening ``relu(target - pred)`` in the ring zone ``0 < d <= ring``.

    Parameters
    ----------
    pred, target : Tensor, shape (N, C, H, W)
        Stretched domain.
    dist : Tensor, shape (N, 1, H, W)
        Distance to the nearest footprint, LR pixels.
    ring : float
        Ring width, LR pixels.

    Returns
    -------
    Tensor
        Scalar (stretched-domain units per pixel and channel; 0 without ring pixels).
    """
    zone = ((dist > 0) & (dist <= ring)).to(torch.float32)
    dark = torch.relu(target.float() - pred.float())
    n = zone.sum() * pred.shape[1]
    return (dark * zone).sum() / n.clamp_min(1.0)


def flux_term(
    pred: torch.Tensor,
    target: torch.Tensor,
    stars: torch.Tensor,
    vec: torch.Tensor,
    kind: torch.Tensor,
    radius: float,
    sky_distance: float,
) -> torch.Tensor:
    """Weighted mean relative linear-flux difference per star (see module notes).

    Parameters
    ----------
    pred, target : Tensor, shape (N, C, H, W)
        Stretched domain.
    stars : Tensor, shape (N, 2, H, W)
        Star maps (distance in LR pixels, nearest footprint label).
    vec, kind
        Stretch of each sample (see :func:`inverse_stretch`).
    radius : float
        Flux region: footprint grown by this many LR pixels.
    sky_distance : float
        Sky pixels are farther than this (LR pixels) from every footprint.

    Returns
    -------
    Tensor
        Scalar, dimensionless (0.1 for a 10 % flux change of every star).
    """
    n_img, _, h, w = pred.shape
    dist, lab = stars[:, 0], stars[:, 1].round().long()
    lin_p = inverse_stretch(pred, vec, kind)
    lin_t = inverse_stretch(target, vec, kind)
    with torch.no_grad():
        sky = (dist > sky_distance)[:, None].expand_as(lin_t)
        flat = torch.where(sky, lin_t, torch.full_like(lin_t, float("nan"))).flatten(2)
        level = torch.nanmedian(flat, dim=2).values
        fallback = lin_t.flatten(2).median(dim=2).values
        level = torch.where(torch.isfinite(level), level, fallback)[:, :, None, None]
    region = ((dist <= radius) & (lab > 0)).to(torch.float32)
    n_lab = int(lab.max()) + 1
    index = (torch.arange(n_img, device=lab.device).view(-1, 1, 1) * n_lab + lab).flatten()
    f_p = torch.zeros(n_img * n_lab, dtype=torch.float32, device=pred.device)
    f_t = torch.zeros_like(f_p)
    f_p = f_p.index_add(0, index, ((lin_p - level).sum(1) * region).flatten())
    f_t = f_t.index_add(0, index, ((lin_t - level).sum(1) * region).flatten()).detach()
    span = (vec[:, 1] - vec[:, 0]).to(torch.float32).mean(1)
    span = span.repeat_interleave(n_lab).to(pred.device)
    is_star = (torch.arange(n_img * n_lab, device=lab.device) % n_lab) != 0
    ok = is_star & (f_t > 0)
    if not bool(ok.any()):
        return pred.float().sum() * 0.0
    f_t, f_p, span = f_t[ok], f_p[ok], span[ok]
    weight = torch.sqrt(f_t / span.clamp_min(1e-30))
    rel = (f_p - f_t).abs() / f_t
    return (weight * rel).sum() / weight.sum()


class StarLoss:
    """The star-aware loss of ``[losses]``: ``ring_weight * ring + flux_weight * flux``.

    Parameters
    ----------
    ring : float
        Ring-zone width, LR pixels.
    radius : float
        Flux-region growth, LR pixels.
    ring_weight, flux_weight : float
        Weights of the two terms.
    """

    def __init__(
        self,
        ring: float = 3.0,
        radius: float = 2.0,
        ring_weight: float = 1.0,
        flux_weight: float = 0.1,
    ) -> None:
        self.ring, self.radius = float(ring), float(radius)
        self.ring_weight, self.flux_weight = float(ring_weight), float(flux_weight)

    def __call__(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        stars: torch.Tensor,
        vec: torch.Tensor,
        kind: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total star loss and its terms ``{"star_ring", "star_flux"}`` (detached)."""
        r = ring_term(pred, target, stars[:, :1], self.ring)
        zero = r.detach() * 0.0
        f = (
            flux_term(pred, target, stars, vec, kind, self.radius, max(self.ring, self.radius))
            if self.flux_weight > 0
            else zero
        )
        total = self.ring_weight * r + self.flux_weight * f
        return total, {"star_ring": r.detach(), "star_flux": f.detach()}
