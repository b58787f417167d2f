"""Fuzzing of FITS reading, WCS rescaling and writing with hypothesis.

Random shapes, dtypes, BZERO/BSCALE/BLANK, odd NAXIS cards, random TAN(-SIP) WCS headers
and junk keywords go through :func:`read_image`, :func:`rescale_header` and
:func:`write_fits`. The outcome is never a crash: either a valid result or an
:class:`InputError`. Where the WCS is valid, rescaling is exact (same sky position for an
input pixel and its upscaled position, within 1e-4 arcsec).

The examples are derandomised so that CI is reproducible; the file runs well over 300
examples in all.
"""

from __future__ import annotations

import math
import re
import string
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astrosleuth_astro.errors import InputError
from astrosleuth_astro.io import (
    LoadedImage,
    add_provenance,
    output_header,
    read_image,
    rescale_header,
    write_fits,
)

FUZZ = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

SCALES = st.sampled_from([1, 2, 3, 4, 1.5, 2.5])
STRUCTURAL = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT"}
STRUCTURAL |= {"BZERO", "BSCALE", "BLANK", "CHECKSUM", "DATASUM", "DATAMIN", "DATAMAX"}


#: DSS plate keywords: astropy 8.0 segfaults in WCS() when one holds a string or boolean.
_DSS_KEY = re.compile(r"^(?:CNPIX\d|[XY]PIXELSZ|PLT\w+|PPO\d+|AMD[XY]\d+)$")


def _wcs_can_read(header: fits.Header) -> bool:
    """Whether astropy.wcs.WCS can be called on ``header`` without crashing the process."""
    for key in header:
        value = header[key]
        if _DSS_KEY.match(key) and (isinstance(value, bool) or not isinstance(value, int | float)):
            return False
    return True


def _quiet_wcs(header: fits.Header, naxis: int | None = None) -> WCS:
    assert _wcs_can_read(header)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WCS(header, naxis=naxis)


def _sep_arcsec(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angular distance (arcsec) between (N, 2) arrays of (ra, dec) in degrees."""
    ra1, de1, ra2, de2 = np.radians([a[:, 0], a[:, 1], b[:, 0], b[:, 1]])
    dra = ra2 - ra1
    num = np.hypot(
        np.cos(de2) * np.sin(dra),
        np.cos(de1) * np.sin(de2) - np.sin(de1) * np.cos(de2) * np.cos(dra),
    )
    den = np.sin(de1) * np.sin(de2) + np.cos(de1) * np.cos(de2) * np.cos(dra)
    return np.degrees(np.arctan2(num, den)) * 3600.0


# --------------------------------------------------------------------------------------
# 1. Reading random arrays with random storage keywords
# --------------------------------------------------------------------------------------

SHAPES = st.one_of(
    st.tuples(st.integers(1, 6)),  # 1-D
    st.tuples(st.integers(1, 5), st.integers(1, 5)),  # 2-D, 1x1 and 1xN included
    st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 4)),  # cubes, 1-5 planes
    st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
)
DTYPES = st.sampled_from(["uint8", "int16", "uint16", "int32", "float32", "float64"])
BSCALES = st.sampled_from([1.0, 1.0, 0.5, 2.0, 1e-3, -1.0, 3.7])
BZEROS = st.sampled_from([0.0, 0.0, 32768.0, -128.0, 1000.5, -1e5])


def _expected_ok(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))


@st.composite
def _raw_arrays(draw):
    shape = draw(SHAPES)
    dtype = np.dtype(draw(DTYPES))
    n = math.prod(shape)
    if dtype.kind == "f":
        specials = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0])
        values = st.one_of(st.floats(-(2.0**100), 2.0**100, width=32), specials)
    else:
        info = np.iinfo(dtype)
        values = st.integers(int(info.min), int(info.max))
    data = np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=dtype).reshape(shape)
    return data


@settings(FUZZ, max_examples=120)
@given(
    data=_raw_arrays(),
    bscale=BSCALES,
    bzero=BZEROS,
    use_blank=st.booleans(),
    blank_pick=st.integers(0, 10**6),
)
def test_read_random_arrays(data, bscale, bzero, use_blank, blank_pick):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.fits"
        blank = None
        if data.dtype == np.uint16:
            # Stored as BITPIX 16 with BZERO 32768 (the unsigned convention).
            raw = (data.astype(np.int64) - 32768).astype(np.int16)
            bscale, bzero = 1.0, 32768.0
        else:
            raw = data
        # The header is written by hand: astropy drops BZERO/BSCALE it did not compute.
        header = fits.PrimaryHDU(data=raw).header
        if bscale != 1.0:
            header["BSCALE"] = bscale
        if bzero != 0.0:
            header["BZERO"] = bzero
        if use_blank and raw.dtype.kind in "iu":
            blank = int(raw.flat[blank_pick % raw.size])
            header["BLANK"] = blank
        body = raw.astype(raw.dtype.newbyteorder(">")).tobytes()
        body = body.ljust(-(-len(body) // 2880) * 2880, b"\0")
        path.write_bytes(header.tostring().encode("ascii") + body)
        before = path.read_bytes()

        try:
            loaded = read_image(path)
        except InputError as exc:
            assert not _expected_ok(raw.shape), f"valid {raw.shape} refused: {exc}"
            assert "\n" not in str(exc) and str(path) in str(exc)
            return
        finally:
            assert path.read_bytes() == before  # the input is never modified

        assert _expected_ok(raw.shape), f"{raw.shape} accepted"
        assert isinstance(loaded, LoadedImage)
        out = loaded.data
        assert out.dtype == np.float32 and out.dtype.isnative and out.ndim == 3
        assert out.shape[0] in (1, 3)
        assert loaded.was_2d == (raw.ndim == 2)
        expected = raw.astype(np.float64) * bscale + bzero
        if blank is not None:
            expected[raw == blank] = np.nan
        expected = expected.astype(np.float32).reshape(out.shape)
        np.testing.assert_array_equal(out, expected)  # NaN positions included

        # And what astropy itself makes of the file (it computes some in float32).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = np.asarray(fits.getdata(path), dtype=np.float64).reshape(out.shape)
        both = np.isfinite(ref) & np.isfinite(out)
        np.testing.assert_allclose(out[both], ref[both], rtol=2e-7, atol=0)


@settings(FUZZ, max_examples=60)
@given(
    bitpix=st.sampled_from([8, 16, 32, 64, -32, -64, 12, 0]),
    naxes=st.lists(st.integers(0, 5), min_size=0, max_size=5),
    extra_naxis=st.integers(-1, 1),
    nbytes=st.integers(0, 3000),
    pad=st.booleans(),
)
def test_read_odd_naxis_never_crashes(bitpix, naxes, extra_naxis, nbytes, pad):
    """Hand-made headers: NAXIS not matching NAXISn, zero sizes, odd BITPIX, short data."""
    cards = [("SIMPLE", True), ("BITPIX", bitpix), ("NAXIS", max(0, len(naxes) + extra_naxis))]
    cards += [(f"NAXIS{i}", n) for i, n in enumerate(naxes, start=1)]
    text = "".join(str(fits.Card(k, v)) for k, v in cards) + "END".ljust(80)
    text = text.ljust(-(-len(text) // 2880) * 2880)
    body = bytes(range(256)) * (nbytes // 256 + 1)
    body = body[:nbytes]
    if pad:
        body = body.ljust(-(-len(body) // 2880) * 2880, b"\0")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "odd.fits"
        path.write_bytes(text.encode("ascii") + body)
        try:
            loaded = read_image(path)
        except InputError as exc:
            assert "\n" not in str(exc)
            return
        out = loaded.data
        assert out.dtype == np.float32 and out.ndim == 3 and out.shape[0] in (1, 3)


# --------------------------------------------------------------------------------------
# 2. Random WCS headers through rescale_header
# --------------------------------------------------------------------------------------

JUNK_TEXT = st.text(string.ascii_letters + string.digits + " -_.:'/()", max_size=90).map(str.strip)
JUNK_VALUES = st.one_of(
    JUNK_TEXT,
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(-1e20, 1e20, allow_nan=False),
)
JUNK_KEYS = st.one_of(
    st.sampled_from(
        ["OBJECT", "EXPTIME", "XPIXSZ", "FOCALLEN", "XBINNING", "IMAGEW", "DATE-OBS"]
        + ["TELESCOP", "PIXSCALE", "SECPIX", "FILTER", "GAIN", "LTV1", "LTM1_1"]
    ),
    st.text("QWXYZJK", min_size=3, max_size=8),  # no WCS or SIP keyword is spelt so
)


@st.composite
def _sip_terms(draw, prefix: str, order: int) -> dict[str, float]:
    terms = {}
    for p in range(order + 1):
        for q in range(order + 1 - p):
            n = p + q
            if prefix in ("A", "B") and n < 2:
                continue  # forward SIP starts at order 2
            if draw(st.booleans()):
                # Small: about a pixel of distortion 1000 pixels from CRPIX.
                mag = {0: 1e-2, 1: 1e-3, 2: 1e-5, 3: 1e-8, 4: 1e-11}[n]
                terms[f"{prefix}_{p}_{q}"] = draw(st.floats(-1, 1)) * mag
    return terms


@st.composite
def _wcs_headers(draw) -> fits.Header:
    h = fits.Header()
    h["SIMPLE"] = True
    h["BITPIX"] = draw(st.sampled_from([16, -32]))
    h["NAXIS"] = 2
    h["NAXIS1"] = draw(st.integers(1, 4000))
    h["NAXIS2"] = draw(st.integers(1, 4000))
    if draw(st.booleans()):
        h["BZERO"] = 32768
        h["BSCALE"] = 1
    sip_order = draw(st.sampled_from([0, 2, 3, 4]))
    suffix = "-SIP" if sip_order else ""
    h["CTYPE1"] = "RA---TAN" + suffix
    h["CTYPE2"] = "DEC--TAN" + suffix
    h["CRVAL1"] = draw(st.floats(0, 360, exclude_max=True))
    h["CRVAL2"] = draw(st.floats(-89.9, 89.9))
    h["CRPIX1"] = draw(st.floats(-1000, 3000))
    h["CRPIX2"] = draw(st.floats(-1000, 3000))
    if draw(st.booleans()):
        h["RADESYS"] = draw(st.sampled_from(["ICRS", "FK5"]))
    scale = draw(st.floats(0.05, 30)) / 3600.0
    theta = math.radians(draw(st.floats(-180, 180)))
    flip = -1.0 if draw(st.booleans()) else 1.0
    form = draw(st.sampled_from(["cd", "pc", "crota"]))
    c, s_ = math.cos(theta), math.sin(theta)
    if form == "cd":
        h["CD1_1"] = flip * scale * c
        h["CD1_2"] = -scale * s_
        h["CD2_1"] = flip * scale * s_
        h["CD2_2"] = scale * c
        if draw(st.booleans()):  # ignored next to CD, but rescaled too
            h["CDELT1"] = flip * scale
            h["CDELT2"] = scale
    elif form == "pc":
        h["CDELT1"] = flip * scale
        h["CDELT2"] = scale
        h["PC1_1"] = c
        h["PC1_2"] = -s_
        h["PC2_1"] = s_
        h["PC2_2"] = c
    else:
        h["CDELT1"] = flip * scale
        h["CDELT2"] = scale
        h["CROTA2"] = math.degrees(theta)
    if sip_order:
        h["A_ORDER"] = sip_order
        h["B_ORDER"] = sip_order
        for key, value in draw(_sip_terms("A", sip_order)).items():
            h[key] = value
        for key, value in draw(_sip_terms("B", sip_order)).items():
            h[key] = value
        if draw(st.booleans()):
            h["AP_ORDER"] = sip_order
            h["BP_ORDER"] = sip_order
            for key, value in draw(_sip_terms("AP", sip_order)).items():
                h[key] = value
            for key, value in draw(_sip_terms("BP", sip_order)).items():
                h[key] = value
    for key, value in draw(st.lists(st.tuples(JUNK_KEYS, JUNK_VALUES), max_size=6)):
        h[key] = value
    if draw(st.booleans()):
        h.add_history(draw(JUNK_TEXT))
    return h


@settings(FUZZ, max_examples=80)
@given(header=_wcs_headers(), s=SCALES, seed=st.integers(0, 2**32 - 1))
def test_rescale_random_wcs_is_exact(header, s, seed):
    original = header.copy()
    out = rescale_header(header, s)
    assert header == original  # the input header is not modified
    for key in ("BITPIX", "BZERO", "BSCALE", "BLANK"):
        assert key not in out
    # The result is a header astropy can write and read back.
    back = fits.Header.fromstring(out.tostring())

    try:
        w_in = _quiet_wcs(header)
    except ValueError:  # astropy refuses it (e.g. a singular matrix): nothing to keep
        return
    w_out = _quiet_wcs(back)
    rng = np.random.default_rng(seed)
    nx, ny = header["NAXIS1"], header["NAXIS2"]
    pix = np.c_[rng.uniform(-0.5, nx - 0.5, 8), rng.uniform(-0.5, ny - 0.5, 8)]
    pix = np.vstack([pix, [[-0.5, -0.5], [nx - 0.5, ny - 0.5]]])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        sky_in = w_in.all_pix2world(pix, 0)
        sky_out = w_out.all_pix2world((pix + 0.5) * s - 0.5, 0)
    ok = np.isfinite(sky_in).all(axis=1)
    # The SIP polynomial is evaluated in the same (scaled) terms: same finiteness.
    np.testing.assert_array_equal(ok, np.isfinite(sky_out).all(axis=1))
    if ok.any():
        sep = _sep_arcsec(sky_in[ok], sky_out[ok])
        assert sep.max() < 1e-4, f"moved by {sep.max():.3g} arcsec"
    if s == 1:  # bit-identical values
        for key in out:
            if key not in ("EQUINOX", "RADESYS", "HISTORY", "COMMENT", ""):
                assert out[key] == header[key]


BAD_VALUES = st.one_of(
    JUNK_TEXT,
    st.booleans(),
    st.integers(-(2**62), 2**62),
    st.floats(-1e300, 1e300, allow_nan=False),
    st.just(0.0),
)
WCS_KEYS = st.sampled_from(
    ["CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CDELT1", "CDELT2", "CD1_1", "CD2_2", "CD1_2"]
    + ["PC1_1", "PC2_1", "CROTA2", "CTYPE1", "CTYPE2", "A_ORDER", "B_ORDER", "A_2_0"]
    + ["AP_0_0", "BP_1_1", "A_DMAX", "LTV1", "LTM2_2", "CNPIX2", "XPIXELSZ", "IMAGEH"]
    + ["EQUINOX", "RADESYS", "EPOCH", "CRPIX1A", "CTYPE2B", "CD1_1A", "WCSAXES", "NAXIS1"]
    + ["CRPIX3", "CDELT3", "PC3_1", "PC1_3", "CTYPE3", "A_9_9", "LTM1_2", "PIXSIZE1"]
)


@settings(FUZZ, max_examples=40)
@given(
    header=_wcs_headers(),
    bad=st.lists(st.tuples(WCS_KEYS, BAD_VALUES), min_size=1, max_size=5),
    drop=st.lists(WCS_KEYS, max_size=3),
    s=SCALES,
)
def test_rescale_damaged_wcs_never_crashes(header, bad, drop, s):
    for key in drop:
        header.remove(key, ignore_missing=True)
    for key, value in bad:
        header[key] = value
    try:
        out = rescale_header(header, s)
    except InputError:
        return
    back = fits.Header.fromstring(out.tostring())  # still a readable header
    assert len(back) == len(out)
    # astropy.wcs.WCS itself is not called here: with damaged keywords (a huge A_ORDER, a
    # string CNPIX1) astropy 8.0 hangs or segfaults, which is not this package's code.


# --------------------------------------------------------------------------------------
# 3. Writing: random data and rescaled headers round-trip
# --------------------------------------------------------------------------------------


@st.composite
def _float_images(draw) -> np.ndarray:
    shape = draw(
        st.one_of(
            st.tuples(st.integers(1, 6), st.integers(1, 6)),
            st.tuples(st.sampled_from([1, 3]), st.integers(1, 5), st.integers(1, 5)),
        )
    )
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int16, np.uint16]))
    n = math.prod(shape)
    if np.dtype(dtype).kind == "f":
        values = st.one_of(
            st.floats(-(2.0**100), 2.0**100, width=32), st.sampled_from([np.nan, np.inf, -np.inf])
        )
    else:
        info = np.iinfo(dtype)
        values = st.integers(int(info.min), int(info.max))
    return np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=dtype).reshape(shape)


def _same_value(a: object, b: object) -> bool:
    """Equal, floats to the ~15 digits astropy writes in a 20-character value field."""
    if isinstance(a, float) and isinstance(b, int | float) and not isinstance(b, bool):
        return a == pytest.approx(b, rel=1e-12, abs=0)
    return a == b


@settings(FUZZ, max_examples=40)
@given(
    data=_float_images(),
    header=_wcs_headers(),
    s=SCALES,
    datarange=st.booleans(),
    suffix=st.sampled_from([".fits", ".fits", ".fit", ".fits.gz", ".fits.fz"]),
)
def test_write_round_trip(data, header, s, datarange, suffix):
    hdr = rescale_header(header, s)
    add_provenance(hdr, model="fuzz", sha256="0" * 64, scale=s, stretch="mtf", version="0")
    if datarange:
        hdr["DATAMIN"] = 0.0
        hdr["DATAMAX"] = 1.0
    expected_hdr = output_header(hdr, data.shape)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"out{suffix}"
        assert write_fits(path, data, hdr) == path
        assert sorted(p.name for p in Path(tmp).iterdir()) == [path.name]  # no temp left
        loaded = read_image(path)

    want = np.asarray(data, dtype=np.float32).reshape(loaded.data.shape)
    np.testing.assert_array_equal(loaded.data, want)
    assert loaded.was_2d == (data.ndim == 2)

    got = loaded.header
    assert got["BITPIX"] == -32
    cards = [(c.keyword, c.value) for c in expected_hdr.cards if c.keyword not in STRUCTURAL]
    read = [(c.keyword, c.value) for c in got.cards if c.keyword not in STRUCTURAL]
    read = [(k, v) for k, v in read if k not in ("ZIMAGE", "ZCMPTYPE") and not k.startswith("Z")]
    cards = [(k, v) for k, v in cards if not k.startswith("Z")]
    assert [k for k, _ in read] == [k for k, _ in cards]
    for (key, want_value), (_, got_value) in zip(cards, read, strict=True):
        assert _same_value(want_value, got_value), (key, want_value, got_value)
    finite = want[np.isfinite(want)]
    if datarange:
        if finite.size:
            assert got["DATAMIN"] == finite.min() and got["DATAMAX"] == finite.max()
        else:
            assert "DATAMIN" not in got and "DATAMAX" not in got
    # The sky is the same through the written file.
    w_a, w_b = _quiet_wcs(hdr, naxis=2), _quiet_wcs(got, naxis=2)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        a = w_a.all_pix2world([[0.0, 0.0], [3.0, 2.0]], 0)
        b = w_b.all_pix2world([[0.0, 0.0], [3.0, 2.0]], 0)
    ok = np.isfinite(a).all(axis=1)
    if ok.any():
        assert _sep_arcsec(a[ok], b[ok]).max() < 1e-6
