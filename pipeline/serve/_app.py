"""The HTTP application: the catalogue's searches, cutouts, provenance and cone search.

:func:`create_app` wraps one opened :class:`catalog.Catalogue` in a FastAPI application. Every
route reads the catalogue through its public API; the access gate (:mod:`._access`) decides who
may call it and at what cost. The OpenAPI description is at ``/openapi.json``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, File, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.serve._access import BodyLimitMiddleware, Caller, Gate, MeterMiddleware
from pipeline.serve._config import ServeConfig
from pipeline.serve._images import cutout_fits, cutout_png, read_upload
from pipeline.serve._params import FORMATS, MEDIA_TYPES, filters_from, position, radius_deg
from pipeline.serve._votable import result_votable, scs_error, scs_votable
from pipeline.serve.errors import BadRequestError, NotFoundError, RateLimitedError, ServeError

__all__ = ["STATIC_DIR", "create_app"]

#: The web page's files (HTML, JavaScript, CSS; nothing from a CDN).
STATIC_DIR = Path(__file__).with_name("static")
_API_KEY = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an API key from `hubcat serve keys add`"
)


def _status_of(exc: Exception) -> int:
    from catalog.errors import (
        CatalogNotFoundError,
        ModelUnavailableError,
        QueryError,
        UnknownTileError,
    )

    if isinstance(exc, ServeError):
        return exc.status
    if isinstance(exc, UnknownTileError):
        return 404
    if isinstance(exc, ModelUnavailableError | CatalogNotFoundError):
        return 503
    if isinstance(exc, QueryError):
        return 400
    return 500


def table_json(table) -> bytes:
    """``{"meta": {...}, "rows": [{column: value}, ...]}`` of a result table (NaN -> null).

    The same document as :func:`catalog.export` writes for JSON, built straight from the
    columns (several times faster than through pandas, which matters per request).
    """
    import json
    import math

    names = table.colnames
    columns = []
    for name in names:
        values = np.asarray(table[name]).tolist()
        if values and isinstance(values[0], float):
            values = [None if not math.isfinite(v) else v for v in values]
        columns.append(values)
    meta = {str(k): v for k, v in table.meta.items() if isinstance(v, str | int | float | bool)}
    rows = [dict(zip(names, vals, strict=True)) for vals in zip(*columns, strict=True)]
    return json.dumps({"meta": meta, "rows": rows}, separators=(",", ":")).encode()


def _render(table, fmt: str) -> Response:
    from catalog import table_to_bytes

    if fmt == "json":
        return Response(table_json(table), media_type=MEDIA_TYPES[fmt])
    if fmt == "votable":  # not catalog's writer: see pipeline.serve._votable._write
        return Response(result_votable(table), media_type=MEDIA_TYPES[fmt])
    return Response(table_to_bytes(table, fmt), media_type=MEDIA_TYPES[fmt])


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        msg = f"format={fmt!r} is not offered; choose one of {list(FORMATS)}"
        raise BadRequestError(msg)
    return fmt


def _warm(cat, tile_id: str, read_tile) -> None:
    """Run every route's code once, in this thread, before serving.

    This reads the metadata, vectors and index, loads the embedding model, and imports every
    module the routes use. Importing C extensions for the first time from several threads at once
    can crash the process; after this, requests import nothing new.
    """
    from astropy import units as u

    from catalog import table_to_bytes
    from catalog.errors import CatalogError
    from hubcat.errors import HubcatError

    similar = cat.similar(tile_id, k=1)
    for fmt in FORMATS:
        _render(similar, fmt)
    row = cat.metadata().iloc[0]
    cone = cat.cone(position(row["ra"], row["dec"]), 1 * u.arcsec)
    scs_votable(cone)
    scs_error("warm-up")
    cutout = read_tile(tile_id)
    cutout_png(cutout.pixels)
    cutout_fits(cutout.pixels, cutout.wcs, {"TILEID": tile_id})
    table_to_bytes(similar, "json")
    try:
        cat.verify(tile_id)
    except HubcatError:  # an unsigned or incomplete log: the provenance route will say so
        pass
    try:  # the model, for image queries
        cat.similar(np.zeros((64, 64), np.float32), k=1, stretch=False)
    except CatalogError:  # its weights are not here: image queries will answer 503
        pass


def create_app(
    cat,
    *,
    config: ServeConfig | None = None,
    keys=None,
    ledger=None,
    quotas=None,
    warm: bool = True,
) -> FastAPI:
    """The service of catalogue ``cat``.

    Parameters
    ----------
    cat : catalog.Catalogue
        An opened catalogue (local or ``s3://``).
    config : ServeConfig, optional
        Limits, prices and anonymous access (default: :class:`ServeConfig()`).
    keys : KeyStore, optional
        API keys; without them only anonymous access is possible.
    ledger : UsageLedger, optional
        Where admitted requests are recorded (none: not recorded).
    quotas : QuotaKeeper, optional
        Rate and quota state (default: a new one, seeded from ``ledger``).
    warm : bool
        Read the metadata and vectors now, so the first request does not pay for it.

    Returns
    -------
    fastapi.FastAPI
    """
    from astropy import units as u

    from catalog.errors import CatalogError
    from pipeline.serve._quota import QuotaKeeper

    config = config or ServeConfig()
    quotas = quotas or QuotaKeeper()
    if ledger is not None:
        from pipeline.serve._quota import utc_day

        for caller, units in ledger.today().items():
            quotas.seed(caller, utc_day(), units)
    gate = Gate(config, keys, quotas)
    embed_lock = threading.Lock()
    # tile reads build the tile's astropy WCS, and wcslib is not thread-safe (concurrent use
    # crashes the process): one tile read at a time
    tile_lock = threading.Lock()

    def read_tile(tile_id: str):
        with tile_lock:
            return cat.tile(tile_id)

    meta = cat.metadata()
    if warm and len(cat):
        _warm(cat, str(meta["tile_id"].iloc[0]), read_tile)

    app = FastAPI(
        title="hubcat",
        version=str(cat.manifest.get("software_version", "")) or "0",
        summary="Similarity search over Hubble tiles, with cone search and signed provenance",
        description=(
            f"Catalogue {cat.uri} (version {cat.version}, {len(cat)} tiles). Send an API key in "
            "the X-API-Key header where the service requires one. Errors answer 4xx with a JSON "
            'body {"error": message}; /scs answers as IVOA Simple Cone Search 1.03 says.'
        ),
        docs_url=None,  # Swagger UI loads from a CDN; the page must work offline
        redoc_url=None,
    )
    app.state.catalogue = cat
    app.state.gate = gate

    def need(kind: str, scope: str = "read"):
        async def admit(request: Request, _key: str | None = Security(_API_KEY)) -> Caller:
            return gate.admit(request, kind, scope)

        return admit

    # ------------------------------------------------------------------ errors

    def _error_response(request: Request, status: int, message: str, headers=None) -> Response:
        if request.url.path == "/scs":
            # SCS 1.03: the error is the VOTable INFO; HTTP 200 unless the gate refused
            code = status if status in (401, 403, 429) else 200
            return Response(
                scs_error(message), status_code=code, media_type="text/xml", headers=headers
            )
        return JSONResponse(
            {"error": message, "status": status}, status_code=status, headers=headers
        )

    @app.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError):
        headers = (
            {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimitedError) else None
        )
        return _error_response(request, exc.status, exc.message, headers)

    @app.exception_handler(CatalogError)
    async def _catalog_error(request: Request, exc: CatalogError):
        return _error_response(request, _status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
            got = err.get("input")
            parts.append(
                f"{where}: {err.get('msg')}"
                + (f" (got {got!r})" if got is not None and not isinstance(got, dict) else "")
            )
        return _error_response(request, 400, "; ".join(parts))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        import logging

        logging.getLogger(__name__).exception("unexpected error on %s", request.url.path)
        message = (
            f"the service failed on this request ({type(exc).__name__}: {exc}); please report it"
        )
        return _error_response(request, 500, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such route {request.url.path}; the API is described at /openapi.json"
        return _error_response(request, exc.status_code, message)

    # ------------------------------------------------------------------ helpers

    def _k(k: int) -> int:
        if k < 1 or k > config.max_k:
            msg = f"k={k} must be between 1 and {config.max_k} (neighbours per search)"
            raise BadRequestError(msg)
        return k

    def _filters(instrument, filter_, zoom, proposal, date_start, date_end, region) -> dict:
        return filters_from(
            instrument=instrument,
            filter=filter_,
            zoom=zoom,
            proposal=proposal,
            date_start=date_start,
            date_end=date_end,
            region=region,
            max_radius_deg=config.max_radius_deg,
        )

    async def filter_params(
        instrument: str | None = Query(
            None, description="instrument(s), comma-separated, e.g. ACS,WFPC2"
        ),
        filter: str | None = Query(None, description="HST filter(s), e.g. F606W,F814W"),
        zoom: str | None = Query(None, description="binning factor(s), e.g. 1 or 1,2"),
        proposal: str | None = Query(None, description="proposal id(s)"),
        date_start: str | None = Query(None, description="earliest observation date (ISO)"),
        date_end: str | None = Query(None, description="latest observation date (ISO, inclusive)"),
        region: str | None = Query(None, description="RA,DEC,RADIUS_ARCSEC: tile centre within it"),
    ) -> dict:
        """The notebook API's filters as query parameters."""
        return _filters(instrument, filter, zoom, proposal, date_start, date_end, region)

    def _tile_row(tile_id: str) -> int:
        from catalog.errors import UnknownTileError

        try:
            return cat.row_of(tile_id)
        except UnknownTileError as exc:
            raise NotFoundError(str(exc)) from None

    # ------------------------------------------------------------------ page and info

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/info", summary="What this service serves and on what terms")
    async def info(caller: Caller = Depends(need("info"))) -> dict:
        zooms = sorted(int(z) for z in meta["zoom"].unique())
        return {
            "catalogue": cat.uri,
            "version": cat.version,
            "tiles": len(cat),
            "model": cat.manifest["model"]["name"],
            "dim": int(cat.manifest["model"]["dim"]),
            "index": cat.manifest["index"]["type"],
            "zooms": zooms,
            "instruments": sorted(set(meta["instrument"].astype(str)) - {""}),
            "filters": sorted(set(meta["filter"].astype(str)) - {""}),
            "anonymous": config.anonymous,
            "limits": {
                "max_k": config.max_k,
                "max_radius_deg": config.max_radius_deg,
                "max_upload_bytes": config.max_upload_bytes,
            },
            "costs": dict(config.costs),
            "caller": caller.caller,
            "used_today": quotas.used_today(caller.caller),
            "daily_quota": caller.limits.daily,
        }

    @app.get("/api/tiles", summary="List tiles (id, position, zoom, instrument, filter)")
    def tiles(
        _c: Caller = Depends(need("lookup")),
        offset: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=10_000),
        format: str = Query("json", description="json, votable or csv"),
    ) -> Response:
        from astropy.table import Table

        sub = meta.iloc[offset : offset + limit]
        table = Table()
        table["tile_id"] = sub["tile_id"].astype(str).to_numpy(dtype=str)
        table["ra"] = sub["ra"].to_numpy(float) * u.deg
        table["dec"] = sub["dec"].to_numpy(float) * u.deg
        table["zoom"] = sub["zoom"].to_numpy(int)
        for name, column in (
            ("instrument", "instrument"),
            ("filter", "filter"),
            ("date_obs", "date_obs"),
        ):
            table[name] = sub[column].astype(str).to_numpy(dtype=str)
        table.meta.update({"catalogue": cat.uri, "offset": offset, "total": len(meta)})
        return _render(table, _check_format(format))

    @app.get("/api/tiles/{tile_id}", summary="One tile's metadata")
    async def tile(tile_id: str, _c: Caller = Depends(need("lookup"))) -> dict:
        import json

        row = _tile_row(tile_id)
        return json.loads(meta.iloc[[row]].to_json(orient="records"))[0]

    @app.get(
        "/api/tiles/{tile_id}/cutout.png",
        summary="The tile as stored (stretched), PNG",
        response_class=Response,
    )
    def tile_png(tile_id: str, _c: Caller = Depends(need("cutout"))) -> Response:
        _tile_row(tile_id)
        return Response(
            cutout_png(read_tile(tile_id).pixels),
            media_type="image/png",
            headers={"Cache-Control": "max-age=86400"},
        )

    @app.get(
        "/api/tiles/{tile_id}/cutout.fits",
        summary="The tile's stored pixels with its WCS, FITS",
        response_class=Response,
    )
    def tile_fits(tile_id: str, _c: Caller = Depends(need("cutout"))) -> Response:
        row = meta.iloc[_tile_row(tile_id)]
        cutout = read_tile(tile_id)
        cards = {
            "TILEID": tile_id,
            "ZOOM": int(row["zoom"]),
            "INSTRUME": str(row["instrument"]),
            "FILTER": str(row["filter"]),
            "DATE-OBS": str(row["date_obs"]),
            "LEAFIDX": _tile_row(tile_id),
        }
        return Response(
            cutout_fits(cutout.pixels, cutout.wcs, cards),
            media_type="application/fits",
            headers={"Content-Disposition": f'attachment; filename="{tile_id}.fits"'},
        )

    @app.get(
        "/api/tiles/{tile_id}/provenance",
        summary="Leaf, inclusion proof and signed checkpoint of a tile",
    )
    def provenance(tile_id: str, _c: Caller = Depends(need("provenance"))) -> dict:
        from hubcat.errors import StoreNotFoundError

        _tile_row(tile_id)
        with tile_lock:  # re-reads and re-hashes the tile's pixels
            proof = cat.verify(tile_id)
        out = proof.to_dict()
        try:
            out["public_key"] = cat.store.get("provenance/public_key").decode().strip()
        except StoreNotFoundError:
            out["public_key"] = ""
        out["verified_by_server"] = True
        return out

    # ------------------------------------------------------------------ searches

    @app.get(
        "/api/similar/tile/{tile_id}",
        summary="Tiles similar to a tile of the catalogue",
        response_class=Response,
    )
    async def similar_tile(
        tile_id: str,
        _c: Caller = Depends(need("similar")),
        k: int = Query(10, description="number of neighbours"),
        format: str = Query("json", description="json, votable or csv"),
        filters: dict = Depends(filter_params),
    ) -> Response:
        fmt, k = _check_format(format), _k(k)
        _tile_row(tile_id)
        return _render(cat.similar(tile_id, k=k, **filters), fmt)

    @app.get(
        "/api/similar/position",
        summary="Tiles similar to the tile at a sky position",
        response_class=Response,
    )
    def similar_position(
        _c: Caller = Depends(need("similar")),
        ra: str = Query(..., description="right ascension, ICRS degrees"),
        dec: str = Query(..., description="declination, ICRS degrees"),
        radius: str | None = Query(
            None,
            description="the nearest tile centre must lie within this many arcsec (default: inside its footprint)",
        ),
        k: int = Query(10),
        format: str = Query("json"),
        filters: dict = Depends(filter_params),
    ) -> Response:
        fmt, k = _check_format(format), _k(k)
        coord = position(ra, dec)
        if radius is None:
            return _render(cat.similar(coord, k=k, **filters), fmt)
        r = radius_deg(radius, name="radius", unit="arcsec", max_deg=config.max_radius_deg)
        zoom = filters.get("zoom") or [int(meta["zoom"].min())]
        near = cat.cone(coord, r * u.deg, zoom=zoom)
        if not len(near):  # an empty result, with its message
            table = near
            table.meta["query"] = (
                f"similar to the tile nearest ra={ra} dec={dec} within {radius} arcsec"
            )
            return _render(table, fmt)
        return _render(cat.similar(str(near["tile_id"][0]), k=k, **filters), fmt)

    @app.post(
        "/api/similar/image",
        summary="Tiles similar to an uploaded FITS or PNG image",
        response_class=Response,
    )
    async def similar_image(
        request: Request,
        _c: Caller = Depends(need("image", "search-by-image")),
        file: UploadFile = File(..., description="a FITS (2-D image HDU) or PNG image"),
        k: int = Query(10),
        format: str = Query("json"),
        filters: dict = Depends(filter_params),
    ) -> Response:
        from starlette.concurrency import run_in_threadpool

        fmt, k = _check_format(format), _k(k)
        data = await file.read(config.max_upload_bytes + 1)
        query, stretch, _what = read_upload(
            data, max_bytes=config.max_upload_bytes, filename=file.filename or "upload"
        )

        def search():
            with embed_lock:
                return cat.similar(query, k=k, stretch=stretch, **filters)

        return _render(await run_in_threadpool(search), fmt)

    @app.get(
        "/api/cone",
        summary="Tiles whose centres lie within a radius of a position",
        response_class=Response,
    )
    def cone(
        _c: Caller = Depends(need("cone")),
        ra: str = Query(..., description="ICRS degrees"),
        dec: str = Query(..., description="ICRS degrees"),
        radius: str = Query(..., description="arcsec"),
        format: str = Query("json"),
        filters: dict = Depends(filter_params),
    ) -> Response:
        fmt = _check_format(format)
        coord = position(ra, dec)
        r = radius_deg(radius, name="radius", unit="arcsec", max_deg=config.max_radius_deg)
        return _render(cat.cone(coord, r * u.deg, **filters), fmt)

    @app.get("/scs", summary="IVOA Simple Cone Search 1.03", response_class=Response)
    def scs(
        _c: Caller = Depends(need("scs")),
        RA: str | None = Query(None, description="ICRS degrees"),
        DEC: str | None = Query(None, description="ICRS degrees"),
        SR: str | None = Query(None, description="search radius, degrees"),
        VERB: str | None = Query(None, description="1, 2 (default) or 3: how many columns"),
    ) -> Response:
        coord = position(RA, DEC, names=("RA", "DEC"))
        sr = radius_deg(SR, name="SR", unit="deg", max_deg=config.max_radius_deg)
        verb = 2
        if VERB not in (None, ""):
            if VERB not in ("1", "2", "3"):
                msg = f"VERB={VERB!r} must be 1, 2 or 3"
                raise BadRequestError(msg)
            verb = int(VERB)
        table = cat.cone(coord, sr * u.deg)
        text = f"hubcat tiles of {cat.uri} (version {cat.version}) within {sr:g} deg of RA={coord.ra.deg:g}, DEC={coord.dec.deg:g}"
        return Response(scs_votable(table, verb=verb, description=text), media_type="text/xml")

    # ------------------------------------------------------------------ usage

    @app.get("/api/usage/me", summary="Your usage today and your limits")
    async def usage_me(caller: Caller = Depends(need("info"))) -> dict:
        return {
            "caller": caller.caller,
            "name": caller.name,
            "used_today": quotas.used_today(caller.caller),
            "daily_quota": caller.limits.daily,
            "rate": caller.limits.rate,
            "burst": caller.limits.burst,
        }

    @app.get("/api/usage", summary="Usage per caller from the signed ledger (admin scope)")
    def usage(
        day: str | None = Query(None, description="UTC day YYYY-MM-DD"),
        _c: Caller = Depends(need("admin", "admin")),
    ) -> dict:
        from pipeline.serve._usage import read_ledger

        if ledger is None:
            msg = "this service keeps no usage ledger (start it with --usage FILE)"
            raise NotFoundError(msg)
        return read_ledger(ledger.path, day=day).to_dict()

    app.add_middleware(MeterMiddleware, ledger=ledger, quotas=quotas)
    # multipart framing adds a little to the file itself
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_upload_bytes + 64 * 1024)
    return app
