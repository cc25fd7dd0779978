"""Query parameters of the API turned into the catalogue's own arguments, with clear errors."""

from __future__ import annotations

import math

from pipeline.serve.errors import BadRequestError

__all__ = ["FORMATS", "MEDIA_TYPES", "filters_from", "position", "radius_deg"]

#: Result formats of the search routes and their media types.
MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "votable": "application/x-votable+xml",
    "csv": "text/csv; charset=utf-8",
}
FORMATS: tuple[str, ...] = tuple(MEDIA_TYPES)


def _number(name: str, text: str | float | None) -> float:
    if text is None or (isinstance(text, str) and not text.strip()):
        msg = f"parameter {name} is missing; give it in degrees, e.g. {name}=53.16"
        raise BadRequestError(msg)
    try:
        value = float(text)
    except (TypeError, ValueError):
        msg = f"parameter {name}={text!r} is not a number; give decimal degrees, e.g. {name}=53.16"
        raise BadRequestError(msg) from None
    if not math.isfinite(value):
        msg = f"parameter {name}={text!r} must be a finite number of degrees"
        raise BadRequestError(msg)
    return value


def position(ra: str | float | None, dec: str | float | None, *, names=("ra", "dec")):
    """``SkyCoord`` (ICRS) of decimal-degree ``ra``, ``dec``; raises for malformed ones."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    a, d = _number(names[0], ra), _number(names[1], dec)
    if not 0.0 <= a <= 360.0:
        msg = f"{names[0]}={a!r} is outside 0..360 degrees"
        raise BadRequestError(msg)
    if not -90.0 <= d <= 90.0:
        msg = f"{names[1]}={d!r} is outside -90..90 degrees"
        raise BadRequestError(msg)
    return SkyCoord(a * u.deg, d * u.deg, frame="icrs")


def radius_deg(value: str | float | None, *, name: str, unit: str, max_deg: float) -> float:
    """A radius given in ``unit`` (``"deg"`` or ``"arcsec"``) as degrees, checked against
    ``max_deg``."""
    r = _number(name, value)
    deg = r / 3600.0 if unit == "arcsec" else r
    if r < 0:
        msg = f"{name}={value!r} is negative; give a radius in {unit}"
        raise BadRequestError(msg)
    if deg > max_deg:
        limit = max_deg * 3600.0 if unit == "arcsec" else max_deg
        msg = (
            f"{name}={value!r} {unit} is larger than this service's limit of {limit:g} {unit}; "
            "search a smaller cone (or several)"
        )
        raise BadRequestError(msg)
    return deg


def _split(text: str | None) -> list[str]:
    return [v.strip() for v in (text or "").split(",") if v.strip()]


def filters_from(
    *,
    instrument: str | None = None,
    filter: str | None = None,
    zoom: str | None = None,
    proposal: str | None = None,
    date_start: str | None = None,
    date_end: str | None = None,
    region: str | None = None,
    max_radius_deg: float = 1.0,
) -> dict:
    """Keyword filters of :meth:`catalog.Catalogue.similar` from query parameters.

    ``instrument``, ``filter``, ``proposal`` and ``zoom`` take comma-separated lists;
    ``date_start`` / ``date_end`` ISO dates (either alone for an open range); ``region``
    ``RA,DEC,RADIUS_ARCSEC``.
    """
    from astropy import units as u

    out: dict = {}
    for key, text in (("instrument", instrument), ("filter", filter), ("proposal", proposal)):
        values = _split(text)
        if values:
            out[key] = values if len(values) > 1 else values[0]
    if zoom:
        try:
            out["zoom"] = [int(z) for z in _split(zoom)]
        except ValueError:
            msg = f"zoom={zoom!r} must be integer binning factors, e.g. zoom=1 or zoom=1,2"
            raise BadRequestError(msg) from None
    if date_start or date_end:
        out["date"] = (date_start or None, date_end or None)
    if region:
        parts = _split(region)
        if len(parts) != 3:
            msg = f"region={region!r} must be RA,DEC,RADIUS_ARCSEC, e.g. region=53.16,-27.78,30"
            raise BadRequestError(msg)
        centre = position(parts[0], parts[1], names=("region RA", "region DEC"))
        r = radius_deg(parts[2], name="region radius", unit="arcsec", max_deg=max_radius_deg)
        out["region"] = (centre, r * u.deg)
    return out
