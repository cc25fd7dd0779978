"""Query helpers of the catalogue: metadata filters, sky positions and result tables."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time

from catalog._columns import column_def
from catalog.errors import QueryError

__all__ = ["FILTER_KEYS", "RESULT_COLUMNS", "centres", "filter_mask", "result_table", "to_angle"]

#: Keyword filters accepted by :meth:`catalog.Catalogue.similar` and :meth:`catalog.Catalogue.cone`.
FILTER_KEYS: tuple[str, ...] = ("instrument", "filter", "zoom", "date", "proposal", "region")

#: Columns of every result table, in order (more metadata columns follow them).
RESULT_COLUMNS: tuple[str, ...] = (
    "tile_id",
    "similarity",
    "ra",
    "dec",
    "zoom",
    "instrument",
    "filter",
    "date_obs",
    "source",
)


def _as_list(value: object) -> list:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def to_angle(radius: object, *, what: str = "radius") -> u.Quantity:
    """``radius`` as an angle Quantity in degrees.

    hubcat's rule for angles, in the Python API and the CLI alike: an angle carries its unit
    (``30 * u.arcsec``, ``"30 arcsec"``, ``"0.5deg"``); a bare number is refused, because
    degrees and arcseconds differ by 3600 and a guess would silently give the wrong tiles.

    Parameters
    ----------
    radius : astropy.units.Quantity or str
        An angle with its unit: a Quantity (scalar or array) or a string astropy parses
        (``"30 arcsec"``).
    what : str
        Name of the argument, used in the error message (``"radius"``, ``"region radius"``).

    Returns
    -------
    astropy.units.Quantity
        The angle in degrees, finite and non-negative (same shape as ``radius``).

    Raises
    ------
    QueryError
        For a bare number, a non-angle, or a negative or non-finite angle.
    """
    bare = isinstance(radius, int | float | np.number) and not isinstance(radius, bool)
    if isinstance(radius, str):
        try:
            bare = u.Quantity(radius).unit == u.dimensionless_unscaled
        except (TypeError, ValueError):
            bare = False
    if bare:
        number = str(radius).strip()
        msg = (
            f"{what}={radius!r} has no unit; give an angle with its unit, e.g. "
            f"{number} * u.arcsec or {number} * u.deg (hubcat never guesses an angle's unit)"
        )
        raise QueryError(msg)
    try:
        angle = u.Quantity(radius).to(u.deg)
    except (u.UnitsError, TypeError, ValueError):
        msg = f"{what}={radius!r} is not an angle; give an astropy Quantity such as 30 * u.arcsec"
        raise QueryError(msg) from None
    if not np.all(np.isfinite(angle.value)) or np.any(angle.value < 0):
        msg = f"{what}={radius!r} must be a finite, non-negative angle"
        raise QueryError(msg)
    return angle


def centres(meta: pd.DataFrame) -> SkyCoord:
    """Tile centres of ``meta`` (columns ``ra``, ``dec`` in degrees ICRS)."""
    return SkyCoord(
        meta["ra"].to_numpy(float) * u.deg, meta["dec"].to_numpy(float) * u.deg, frame="icrs"
    )


def _to_time(value: object, what: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        if isinstance(value, Time):
            value = value.isot
        return pd.Timestamp(value)
    except (ValueError, TypeError):
        msg = (
            f"date filter bound {what}={value!r} is not a date; use an ISO string like '2004-03-01'"
        )
        raise QueryError(msg) from None


def _text_match(column: pd.Series, values: list) -> np.ndarray:
    wanted = {str(v).strip().upper() for v in values}
    return column.astype("string").fillna("").str.strip().str.upper().isin(wanted).to_numpy()


def filter_mask(
    meta: pd.DataFrame, coords: SkyCoord | None = None, **filters: object
) -> np.ndarray | None:
    """Boolean mask of the rows of ``meta`` that pass every filter (``None``: no filter given).

    Parameters
    ----------
    meta : pandas.DataFrame
        Catalogue metadata.
    coords : SkyCoord, optional
        Tile centres of ``meta`` (computed when needed and not given).
    **filters
        ``instrument``, ``filter`` (case-insensitive names), ``zoom`` (binning factor),
        ``proposal`` (proposal id), ``date=(start, end)`` (inclusive, either end ``None`` for
        open; ISO strings, datetimes or astropy Times), ``region=(SkyCoord, radius)`` (tile centre
        within ``radius``). Each accepts one value or a list (any of them matches); ``None``
        means no constraint.

    Raises
    ------
    QueryError
        For an unknown filter name or a value that cannot be interpreted.
    """
    unknown = sorted(set(filters) - set(FILTER_KEYS))
    if unknown:
        msg = f"unknown filter(s) {unknown}; the filters are {list(FILTER_KEYS)}"
        raise QueryError(msg)
    active = {k: v for k, v in filters.items() if v is not None}
    if not active:
        return None
    mask = np.ones(len(meta), dtype=bool)
    for key, value in active.items():
        if key == "instrument":
            mask &= _text_match(meta["instrument"], _as_list(value))
        elif key == "filter":
            mask &= _text_match(meta["filter"], _as_list(value))
        elif key == "proposal":
            mask &= _text_match(meta["proposal_id"], _as_list(value))
        elif key == "zoom":
            try:
                zooms = [int(z) for z in _as_list(value)]
            except (TypeError, ValueError):
                msg = f"zoom={value!r} must be an integer binning factor or a list of them"
                raise QueryError(msg) from None
            mask &= meta["zoom"].astype(int).isin(zooms).to_numpy()
        elif key == "date":
            ranges = [value] if _is_date_range(value) else _as_list(value)
            dates = pd.to_datetime(meta["date_obs"], errors="coerce")
            sub = np.zeros(len(meta), dtype=bool)
            for rng in ranges:
                if not _is_date_range(rng):
                    msg = f"date={value!r} must be a (start, end) pair or a list of pairs"
                    raise QueryError(msg)
                start, end = _to_time(rng[0], "start"), _to_time(rng[1], "end")
                ok = np.array(dates.notna().to_numpy(), dtype=bool)
                if start is not None:
                    ok &= (dates >= start).to_numpy()
                if end is not None:
                    # a bare date as the end includes that whole day
                    if end == end.normalize():
                        end = end + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
                    ok &= (dates <= end).to_numpy()
                sub |= ok
            mask &= sub
        elif key == "region":
            regions = [value] if _is_region(value) else _as_list(value)
            if coords is None:
                coords = centres(meta)
            sub = np.zeros(len(meta), dtype=bool)
            for reg in regions:
                if not _is_region(reg):
                    msg = f"region={value!r} must be a (SkyCoord, radius) pair or a list of pairs"
                    raise QueryError(msg)
                centre, radius = reg
                sub |= (coords.separation(centre) <= to_angle(radius)).astype(bool)
            mask &= sub
    return mask


def _is_date_range(value: object) -> bool:
    return (
        isinstance(value, tuple | list)
        and len(value) == 2
        and not isinstance(value[0], tuple | list)
    )


def _is_region(value: object) -> bool:
    return isinstance(value, tuple | list) and len(value) == 2 and isinstance(value[0], SkyCoord)


def _str(column: pd.Series) -> np.ndarray:
    """A numpy unicode array (never object dtype: every table writer handles it)."""
    values = column.astype("string").fillna("").tolist()
    return np.array(values, dtype=str) if values else np.zeros(0, dtype="<U1")


def result_table(
    meta: pd.DataFrame, rows: np.ndarray, score: np.ndarray | None, score_name: str, unit=None
) -> Table:
    """Result table of ``rows`` of ``meta`` with ``score`` as column ``score_name``.

    Columns: :data:`RESULT_COLUMNS` (``similarity`` replaced by ``score_name``), then
    ``proposal_id``, ``detector``, ``exptime``, ``bunit``, ``pixel_scale``, ``mosaic_id``,
    ``row``. Every column carries the unit, description and UCD (``meta["ucd"]``) of its
    definition in :data:`catalog._columns.COLUMNS`; unknown text values are ``""``.

    Parameters
    ----------
    meta : pandas.DataFrame
        The catalogue's metadata (:meth:`Catalogue.metadata` columns), one row per tile.
    rows : numpy.ndarray
        int [M], the positional rows of ``meta`` to return, in result order.
    score : numpy.ndarray or None
        float [M], one score per row (e.g. cosine similarity, separation), stored as float64;
        None for no score column.
    score_name : str
        Name of the score column, placed second after ``tile_id``.
    unit : astropy.units.Unit, optional
        Unit of the score column (e.g. ``u.arcsec`` for a separation); None leaves it unitless.

    Returns
    -------
    astropy.table.Table
        M rows; ``ra``, ``dec`` in degrees, ``row`` the catalogue row (leaf index).
    """
    sub = meta.iloc[np.asarray(rows, dtype=np.int64)]
    table = Table()
    table["tile_id"] = _str(sub["tile_id"])
    if score is not None:
        table[score_name] = np.asarray(score, dtype=np.float64)
    table["ra"] = sub["ra"].to_numpy(float)
    table["dec"] = sub["dec"].to_numpy(float)
    table["zoom"] = sub["zoom"].to_numpy(np.int64)
    for name in ("instrument", "filter", "date_obs", "source", "proposal_id", "detector"):
        table[name] = _str(sub[name])
    table["exptime"] = _float(sub, "exptime")
    table["bunit"] = _str(sub["bunit"]) if "bunit" in sub else _str(pd.Series([""] * len(sub)))
    table["pixel_scale"] = _float(sub, "pixel_scale")
    table["mosaic_id"] = _str(sub["mosaic_id"])
    table["row"] = np.asarray(rows, dtype=np.int64)
    for name in table.colnames:
        definition = column_def(name)
        if definition is None:
            continue
        col = table[name]
        if definition.unit:
            col.unit = u.Unit(definition.unit, format="vounit")
        col.description = definition.description
        col.meta["ucd"] = definition.ucd
    if score is not None and unit is not None:
        table[score_name].unit = unit
    return table


def _float(sub: pd.DataFrame, name: str) -> np.ndarray:
    if name not in sub:
        return np.full(len(sub), np.nan)
    return pd.to_numeric(sub[name], errors="coerce").to_numpy(float)
