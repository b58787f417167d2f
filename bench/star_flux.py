"""Star flux kept by a model, by star width (the README's "Known limitations" numbers).

For 8 simulated fields per FWHM (astrosleuth_astro.sim, noise, no nebulosity) at several seeing FWHM,
upscale with the model and compare aperture fluxes (radius 2.5 FWHM, local-background
annulus) of unsaturated stars with S/N > 20: ratio = SR flux / scale**2 / LR flux.

    python bench/star_flux.py [--model default] [--protect-stars] [--conserve-flux [MODE]]
"""

import argparse

import numpy as np
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture, aperture_photometry

import astrosleuth_astro as asa
from astrosleuth_astro.sim import simulate


def flux(img, x, y, r):
    ap, ann = CircularAperture((x, y), r), CircularAnnulus((x, y), r + 2 * r / 2.5, r + 5 * r / 2.5)
    bkg = ApertureStats(img, ann)
    return aperture_photometry(img, ap)["aperture_sum"][
        0
    ] - bkg.median * ap.area, bkg.std * np.sqrt(ap.area)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="default")
    parser.add_argument("--protect-stars", action="store_true")
    parser.add_argument("--conserve-flux", nargs="?", const="sources", default="off")
    args = parser.parse_args()
    net = asa.get_backend(args.model)
    for fwhm in (1.2, 1.6, 2.5, 3.5):
        ratios = []
        for seed in range(8):
            res = simulate((96, 96), fwhm=fwhm, seed=100 + seed, nebulosity=0.0, hot_pixels=0)
            lr = res.lr[0]
            sr = asa.upscale(
                lr, model=net, protect_stars=args.protect_stars, conserve_flux=args.conserve_flux
            )
            cat = res.catalog
            inside = (cat["x"] > 8) & (cat["x"] < 88) & (cat["y"] > 8) & (cat["y"] < 88)
            keep = inside & ~cat["saturated"]
            for x, y in zip(cat["x"][keep], cat["y"][keep], strict=True):
                r = 2.5 * fwhm
                f_lr, noise = flux(lr, x, y, r)
                f_sr, _ = flux(sr, (x + 0.5) * 4 - 0.5, (y + 0.5) * 4 - 0.5, 4 * r)
                if f_lr > 20 * noise:
                    ratios.append(f_sr / 16 / f_lr)
        r = np.array(ratios)
        print(
            f"FWHM {fwhm} px: {len(r)} stars, flux ratio median {np.median(r):.3f} "
            f"(10th-90th percentile {np.percentile(r, 10):.3f}-{np.percentile(r, 90):.3f})"
        )


if __name__ == "__main__":
    main()
