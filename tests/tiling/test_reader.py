"""PixelReader and RangeFile: scaled integers, BLANK, padding, ranged reads equal local reads."""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from hubcat.storage import LocalObjectStore
from tiling import RangeFile
from tiling._plan import plan_images
from tiling._source import PixelReader, open_fits, open_source


def test_scaled_integer_image_with_blank(tmp_path):
    raw = np.arange(300 * 260, dtype=np.int16).reshape(300, 260) % 1000
    raw[10, 20] = -32768
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 10.0
    hdu.header["BLANK"] = -32768
    for key, value in {
        "CTYPE1": "RA---TAN",
        "CTYPE2": "DEC--TAN",
        "CDELT1": -1e-5,
        "CDELT2": 1e-5,
    }.items():
        hdu.header[key] = value
    hdu.writeto(tmp_path / "int.fits")
    with fits.open(tmp_path / "int.fits", do_not_scale_image_data=True) as check:
        assert check[0].header["BSCALE"] == 0.5 and (check[0].data == raw).all()
    with open_source(tmp_path / "int.fits") as src:
        hdul, fh = open_fits(src)
        plan = plan_images(src, hdul)[0][0]
        reader = PixelReader(src, plan.header, plan.offset)
        region = reader.read(-5, 40, 250, 300)  # overhangs the top and the right edge
        fh.close()
    want = raw.astype(np.float64) * 0.5 + 10.0
    want[10, 20] = np.nan
    assert np.isnan(region[:5]).all() and np.isnan(region[:, 10:]).all()
    np.testing.assert_array_equal(region[5:, :10], want[0:40, 250:260])
    narrow = PixelReader(src, plan.header, plan.offset, rows_per_request=7).read(0, 30, 15, 25)
    np.testing.assert_array_equal(narrow, want[0:30, 15:25])


def test_range_file_reads_like_the_file(tmp_path):
    data = np.random.default_rng(0).bytes(3_000_000)
    (tmp_path / "blob").write_bytes(data)
    with RangeFile(LocalObjectStore(tmp_path), "blob", block_size=1 << 16, cache_blocks=2) as f:
        assert f.read(10) == data[:10]
        f.seek(2_999_990)
        assert f.read(100) == data[2_999_990:]
        f.seek(-5, 2)
        assert f.tell() == len(data) - 5
        f.seek(100_000)
        assert f.read(500_000) == data[100_000:600_000]  # bypasses the cache
        f.seek(1000)
        buf = bytearray(70_000)
        assert f.readinto(buf) == 70_000 and bytes(buf) == data[1000:71_000]
