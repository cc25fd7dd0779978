"""Normalise the header conventions of HST products into the tile metadata columns.

HST headers differ by era, instrument and pipeline: the filter is in ``FILTER`` (WFC3, HAP), in
``FILTER1``/``FILTER2`` with ``CLEAR*`` placeholders (ACS), or in ``FILTNAM1``/``FILTNAM2`` with
numeric ``FILTER1`` codes (WFPC2); ``DATE-OBS`` is ``YYYY-MM-DD[Thh:mm:ss]`` or the pre-2000 FITS
form ``dd/mm/yy`` (1900-1999 by the standard); keywords live in the primary header, in the
extension, or both (the extension wins; the primary fills gaps); ``BUNIT`` comes in several
spellings or not at all. :func:`normalise_header` maps all of them onto one set of columns and
:func:`raw_cards` keeps the original cards that matter, for provenance.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping

__all__ = ["KEPT_CARDS", "normalise_bunit", "normalise_header", "raw_cards"]

#: Header cards kept verbatim in the mosaic record (extension value first, else primary).
KEPT_CARDS: tuple[str, ...] = (
    "TELESCOP", "INSTRUME", "DETECTOR", "FILTER", "FILTER1", "FILTER2", "FILTNAM1", "FILTNAM2",
    "DATE-OBS", "TIME-OBS", "EXPSTART", "EXPEND", "EXPTIME", "TEXPTIME", "PROPOSID", "TARGNAME",
    "BUNIT", "PHOTMODE", "PHOTFLAM", "PHOTPLAM", "PHOTZPT", "PHOTBW", "ROOTNAME", "FILENAME",
    "FILETYPE", "RADESYS", "EQUINOX", "WCSNAME", "SKYCELL", "ORIENTAT", "D001SCAL", "NCOMBINE",
)  # fmt: skip

_CLEAR = re.compile(r"^(CLEAR.*|N/A|NONE|OPEN|BLANK|0)?$", re.IGNORECASE)

#: Spellings of BUNIT found in HST products, mapped to astropy's canonical string.
_BUNIT = {
    "ELECTRONS/S": "electron / s",
    "ELECTRONS/SEC": "electron / s",
    "ELECTRON/S": "electron / s",
    "ELECTRON/SEC": "electron / s",
    "E-/S": "electron / s",
    "E/S": "electron / s",
    "ELECTRON / S": "electron / s",
    "ELECTRONS": "electron",
    "ELECTRON": "electron",
    "E-": "electron",
    "COUNTS/S": "count / s",
    "COUNTS/SEC": "count / s",
    "COUNT/S": "count / s",
    "DN/S": "DN / s",
    "COUNTS": "count",
    "DN": "DN",
    "MJY/SR": "MJy / sr",
    "JY/PIXEL": "Jy / pix",
    "UJY/PIXEL": "uJy / pix",
    "NJY/PIXEL": "nJy / pix",
}

#: Instrument, detector, filter parsed from product names (``..._acs-hrc_f606w_...``,
#: ``hst_skycell-p2429x12y01_acs_wfc_f435w_all_drc.fits``, ``..._wfc3_ir_f105w_...``).
_NAME_PATTERN = re.compile(
    r"(?:^|[_\-.])(acs|wfc3|wfpc2|nicmos|stis|wfpc)[_\-](wfc|hrc|sbc|uvis|ir|pc|wf|nic\d|ccd)"
    r"(?:[_\-](f\d{3,4}[a-z]{1,2}|g\d{3,4}[a-z]?))?",
    re.IGNORECASE,
)

_WFPC2_DETECTOR = {1: "PC1", 2: "WF2", 3: "WF3", 4: "WF4"}


def _get(headers: tuple[Mapping, ...], key: str) -> object | None:
    for header in headers:
        if key in header:
            value = header[key]
            if isinstance(value, str):
                value = value.strip()
                if value == "":
                    continue
            if value is None:
                continue
            return value
    return None


def _text(value: object | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def normalise_bunit(value: object | None) -> str:
    """Return the canonical spelling of a ``BUNIT`` value (``""`` when missing or empty).

    Known HST spellings (``ELECTRONS/S``, ``electron / s``, ``COUNTS/S``, ...) map to astropy's
    string form; anything else is returned stripped, unchanged.

    Parameters
    ----------
    value : object or None
        The header card's value (usually a str).

    Returns
    -------
    str
        The canonical unit string (``"electron / s"``), the stripped text, or ``""``.
    """
    text = _text(value)
    if not text:
        return ""
    key = re.sub(r"\s+", "", text.upper())
    for spelling, canonical in _BUNIT.items():
        if key == re.sub(r"\s+", "", spelling):
            return canonical
    return text


def _parse_date(value: object | None) -> str:
    text = _text(value)
    if not text:
        return ""
    m = re.match(r"^(\d{4})-(\d{2})-(\d{2})", text)
    if m:
        return f"{m.group(1)}-{m.group(2)}-{m.group(3)}"
    m = re.match(r"^(\d{1,2})/(\d{1,2})/(\d{2})$", text)
    if m:  # the pre-2000 FITS form dd/mm/yy means 19yy
        day, month, year = int(m.group(1)), int(m.group(2)), 1900 + int(m.group(3))
        try:
            return _dt.date(year, month, day).isoformat()
        except ValueError:
            return ""
    return ""


def _mjd_to_date(value: object | None) -> str:
    try:
        mjd = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    if not 20000.0 < mjd < 100000.0:
        return ""
    return (_dt.date(1858, 11, 17) + _dt.timedelta(days=int(mjd))).isoformat()


def _filter(headers: tuple[Mapping, ...]) -> str:
    direct = _text(_get(headers, "FILTER"))
    if direct and not _CLEAR.match(direct):
        return direct.upper()
    names = []
    for pair in (("FILTER1", "FILTER2"), ("FILTNAM1", "FILTNAM2")):
        for key in pair:
            value = _get(headers, key)
            if isinstance(value, str) and not _CLEAR.match(value.strip()):
                names.append(value.strip().upper())
        if names:
            break
    return "+".join(names)


def normalise_header(
    extension: Mapping, primary: Mapping | None = None, *, name: str = ""
) -> dict[str, object]:
    """Map HST header conventions onto the metadata columns.

    Parameters
    ----------
    extension : Mapping
        Header of the image HDU (its values win).
    primary : Mapping, optional
        Primary header (fills keywords the extension lacks).
    name : str
        File name of the product; instrument, detector and filter are parsed from it when the
        headers lack them (HAP and drizzle products name them: ``..._acs_wfc_f435w_...``).

    Returns
    -------
    dict
        ``telescope``, ``instrument``, ``detector``, ``filter`` (str, ``"+"``-joined when
        several non-clear elements are in the beam), ``date_obs`` (ISO date or ``""``),
        ``exptime`` (float seconds, NaN when unknown), ``proposal_id``, ``target``, ``bunit``
        (str, ``""`` when unknown).
    """
    headers = (extension,) if primary is None or primary is extension else (extension, primary)
    instrument = _text(_get(headers, "INSTRUME")).upper()
    detector_raw = _get(headers, "DETECTOR")
    if instrument == "WFPC2" and isinstance(detector_raw, int):
        detector = _WFPC2_DETECTOR.get(detector_raw, str(detector_raw))
    else:
        detector = _text(detector_raw).upper()
    filt = _filter(headers)
    if name and not (instrument and detector and filt):
        m = _NAME_PATTERN.search(name)
        if m:
            instrument = instrument or m.group(1).upper()
            detector = detector or m.group(2).upper()
            filt = filt or (m.group(3) or "").upper()
    date = _parse_date(_get(headers, "DATE-OBS")) or _mjd_to_date(_get(headers, "EXPSTART"))
    exptime = _get(headers, "EXPTIME")
    if exptime is None:
        exptime = _get(headers, "TEXPTIME")
    try:
        exptime_value = float(exptime) if exptime is not None else float("nan")
    except (TypeError, ValueError):
        exptime_value = float("nan")
    telescope = _text(_get(headers, "TELESCOP")).upper()
    if not telescope and instrument in {"ACS", "WFC3", "WFPC2", "NICMOS", "STIS", "WFPC"}:
        telescope = "HST"
    # BUNIT belongs to the data it describes: read it from the extension only.
    return {
        "telescope": telescope,
        "instrument": instrument,
        "detector": detector,
        "filter": filt,
        "date_obs": date,
        "exptime": exptime_value,
        "proposal_id": _text(_get(headers, "PROPOSID")),
        "target": _text(_get(headers, "TARGNAME")),
        "bunit": normalise_bunit(extension.get("BUNIT")),
    }


def raw_cards(extension: Mapping, primary: Mapping | None = None) -> dict[str, object]:
    """The original values of :data:`KEPT_CARDS` (extension first, else primary), JSON-safe."""
    headers = (extension,) if primary is None else (extension, primary)
    out: dict[str, object] = {}
    for key in KEPT_CARDS:
        for header in headers:
            if key in header:
                value = header[key]
                if isinstance(value, bool | int | float | str):
                    out[key] = value
                else:
                    out[key] = str(value)
                break
    return out
