"""An :class:`~hubcat.storage.ObjectStore` in an S3 bucket, through boto3.

Credentials come from boto3's usual chain (environment, shared files, instance roles). The
endpoint is the ``endpoint_url`` option, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (as
boto3 itself reads them), else AWS. Public buckets such as MAST's ``stpubdata`` are read with
unsigned (anonymous) requests. Throttling and 5xx answers are retried by botocore's retry modes,
with exponential backoff; a body cut short in transit is fetched again. 403 and 404 answers become
:class:`~hubcat.errors.StoragePermissionError` and :class:`~hubcat.errors.StoreNotFoundError`
naming the ``s3://`` key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

from hubcat.errors import StorageError, StoragePermissionError, StoreNotFoundError
from hubcat.storage._base import ObjectStore

__all__ = ["PUBLIC_BUCKETS", "S3ObjectStore", "S3Options", "split_s3_uri"]

log = logging.getLogger(__name__)

#: Buckets that are read anonymously (unsigned requests) unless told otherwise.
PUBLIC_BUCKETS: frozenset[str] = frozenset({"stpubdata"})

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_FORBIDDEN = {"403", "AccessDenied", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId"}


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` into ``("bucket", "some/prefix")``.

    Parameters
    ----------
    uri : str
        An ``s3://BUCKET[/PREFIX]`` URI.

    Returns
    -------
    tuple of (str, str)
        The bucket name and the key prefix (no leading or trailing ``/``; ``""`` for none).

    Raises
    ------
    StorageError
        If ``uri`` is not an ``s3://`` URI with a bucket name.
    """
    parsed = urlparse(str(uri))
    if parsed.scheme != "s3" or not parsed.netloc:
        msg = f"{uri!r} is not an S3 URI; expected s3://BUCKET[/PREFIX]"
        raise StorageError(msg)
    return parsed.netloc, parsed.path.strip("/")


@dataclass(frozen=True)
class S3Options:
    """How an :class:`S3ObjectStore` talks to S3 (none of it changes stored bytes).

    Parameters
    ----------
    endpoint_url : str or None
        S3-protocol endpoint (``http://127.0.0.1:9000``); None: ``AWS_ENDPOINT_URL_S3`` /
        ``AWS_ENDPOINT_URL`` or AWS.
    anonymous : bool or None
        Unsigned requests. None: anonymous for :data:`PUBLIC_BUCKETS`, or when the credential
        chain finds no credentials.
    region : str or None
        AWS region; None: the chain's, else ``us-east-1``.
    retry_mode : str
        botocore retry mode: ``"standard"`` or ``"adaptive"`` (client-side rate limiting too).
    max_attempts : int
        Total attempts per request (first try included) for throttling, 5xx and connection errors.
    connect_timeout, read_timeout : float
        Seconds.
    profile : str or None
        Named profile of the shared credentials file.
    list_page_size : int
        Keys per ``ListObjectsV2`` page (S3's maximum is 1000).
    """

    endpoint_url: str | None = None
    anonymous: bool | None = None
    region: str | None = None
    retry_mode: str = "standard"
    max_attempts: int = 8
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    profile: str | None = None
    list_page_size: int = 1000

    def __post_init__(self) -> None:
        if self.retry_mode not in ("standard", "adaptive", "legacy"):
            msg = f"retry_mode {self.retry_mode!r} is not a botocore retry mode; use 'standard' or 'adaptive'"
            raise StorageError(msg)
        if self.max_attempts < 1:
            msg = f"max_attempts must be >= 1, got {self.max_attempts}"
            raise StorageError(msg)


class S3ObjectStore(ObjectStore):
    """An object store under ``s3://bucket/prefix``.

    Parameters
    ----------
    bucket : str
        Bucket name.
    prefix : str
        Key prefix of the store's root (no leading or trailing ``/``); ``""`` for the bucket root.
    client : botocore client or None
        A boto3 S3 client to use; None makes one from ``options`` (and re-makes it after
        unpickling, so the store can travel to Dask workers).
    options : S3Options or None
        Endpoint, anonymity, retries.
    read_only : bool
        Refuse :meth:`put` and :meth:`delete`.

    Notes
    -----
    ``put`` is a single ``PutObject``, which S3 makes visible whole or not at all.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client=None,
        *,
        options: S3Options | None = None,
        read_only: bool = False,
    ) -> None:
        if not bucket or "/" in bucket:
            msg = f"invalid S3 bucket name {bucket!r}; expected a bare name like 'my-bucket'"
            raise StorageError(msg)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.options = options or S3Options()
        self.supports_writes = not read_only
        self._client = client
        self._lock = threading.Lock()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_uri(
        cls, uri: str, *, client=None, read_only: bool = False, **options
    ) -> S3ObjectStore:
        """Open ``s3://bucket/prefix``; ``options`` are the fields of :class:`S3Options`.

        Parameters
        ----------
        uri : str
            ``s3://BUCKET[/PREFIX]``.
        client : botocore client or None
            A boto3 S3 client to use; None makes one from the options on first use.
        read_only : bool
            Refuse :meth:`put` and :meth:`delete`.
        **options
            Fields of :class:`S3Options` (``endpoint_url``, ``anonymous``, ...); None values
            keep the field's default.

        Returns
        -------
        S3ObjectStore

        Raises
        ------
        StorageError
            If ``uri`` is not an S3 URI or an option is unknown.
        """
        bucket, prefix = split_s3_uri(uri)
        known = set(S3Options.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            msg = f"unknown S3 option(s) {unknown} for {uri}; known options: {sorted(known)}"
            raise StorageError(msg)
        opts = S3Options(**{k: v for k, v in options.items() if v is not None})
        return cls(bucket, prefix, client, options=opts, read_only=read_only)

    def child(self, prefix: str) -> S3ObjectStore:
        """Return a store rooted at ``prefix`` below this one, sharing client and options.

        Parameters
        ----------
        prefix : str
            Key prefix, relative to this store's root.

        Returns
        -------
        S3ObjectStore
            Same bucket, client, options and read-only flag.

        Raises
        ------
        StorageError
            If ``prefix`` contains ``..``.
        """
        return S3ObjectStore(
            self.bucket,
            self._key(prefix),
            self._client,
            options=self.options,
            read_only=not self.supports_writes,
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_client"] = None  # clients do not pickle; a new one is made on first use
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, S3ObjectStore) and (self.bucket, self.prefix, self.options) == (
            other.bucket,
            other.prefix,
            other.options,
        )

    def __hash__(self) -> int:
        return hash((self.bucket, self.prefix, self.options))

    @property
    def anonymous(self) -> bool:
        """Whether requests are unsigned."""
        if self.options.anonymous is not None:
            return self.options.anonymous
        if self.bucket in PUBLIC_BUCKETS:
            return True
        return self._session().get_credentials() is None

    def _session(self):
        import boto3

        return boto3.session.Session(profile_name=self.options.profile)

    @property
    def client(self):
        """The boto3 S3 client (made on first use)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self):
        import botocore
        from botocore.config import Config

        opts = self.options
        session = self._session()
        config = Config(
            retries={"mode": opts.retry_mode, "total_max_attempts": opts.max_attempts},
            connect_timeout=opts.connect_timeout,
            read_timeout=opts.read_timeout,
            signature_version=botocore.UNSIGNED if self.anonymous else None,
            max_pool_connections=32,
        )
        region = opts.region or session.region_name or "us-east-1"
        return session.client(
            "s3", endpoint_url=opts.endpoint_url, region_name=region, config=config
        )

    # -- helpers ------------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        key = key.strip("/")
        if ".." in key.split("/"):
            msg = f"key {key!r} escapes the store at {self.uri}; use a relative key without '..'"
            raise StorageError(msg)
        if not self.prefix:
            return key
        return f"{self.prefix}/{key}" if key else self.prefix

    def _error(self, exc: Exception, key: str, action: str) -> StorageError:
        """Translate a botocore exception into a hubcat error naming ``s3://bucket/key``."""
        from botocore.exceptions import ClientError, NoCredentialsError

        where = f"s3://{self.bucket}/{self._key(key)}"
        if isinstance(exc, NoCredentialsError):
            msg = (
                f"cannot {action} {where}: no AWS credentials found; set AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY or a profile, or open the store with anonymous=True for a "
                "public bucket"
            )
            return StoragePermissionError(msg)
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _NOT_FOUND or status == "404":
                what = "bucket" if code == "NoSuchBucket" else "key"
                msg = f"{where} does not exist (no such {what}); check the bucket, key and endpoint"
                return StoreNotFoundError(msg)
            if code in _FORBIDDEN or status == "403":
                mode = "anonymous (unsigned)" if self.anonymous else "signed"
                msg = (
                    f"access denied to {where} ({action}, {mode} request, {code or status}); "
                    "check the credentials, the bucket policy, or anonymous= for public buckets"
                )
                return StoragePermissionError(msg)
            msg = f"cannot {action} {where}: {code or status} {err.get('Message', '')}".strip()
            return StorageError(msg)
        msg = f"cannot {action} {where}: {type(exc).__name__}: {exc}"
        return StorageError(msg)

    def _check_writable(self, key: str) -> None:
        if not self.supports_writes:
            msg = f"{self.uri} is opened read-only; cannot write {key!r}"
            raise StorageError(msg)

    def _read_body(self, key: str, **kwargs) -> bytes:
        """GetObject and read its body, fetching again when the body is cut short in transit."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            IncompleteReadError,
            ResponseStreamingError,
        )

        attempts = self.options.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **kwargs)
                return response["Body"].read()
            except (IncompleteReadError, ResponseStreamingError) as exc:
                if attempt == attempts:
                    raise self._error(exc, key, "read") from exc
                log.warning("s3://%s/%s: body cut short (%s); retrying", self.bucket, key, exc)
                time.sleep(min(0.05 * 2**attempt, 2.0))
            except ClientError as exc:
                raise self._error(exc, key, "read") from exc
            except BotoCoreError as exc:
                raise self._error(exc, key, "read") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- ObjectStore --------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        return self._read_body(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Ranged GET of ``length`` bytes from ``start`` (fewer at the end, empty past it).

        Parameters
        ----------
        key : str
            Key relative to the store's root.
        start : int
            Offset of the first byte, >= 0.
        length : int
            Number of bytes wanted, >= 0 (0 only checks that ``key`` exists).

        Returns
        -------
        bytes

        Raises
        ------
        StoreNotFoundError
            If ``key`` does not exist.
        StoragePermissionError
            If S3 denies the read.
        StorageError
            If ``start`` or ``length`` is negative, or the request fails after its retries.
        """
        from botocore.exceptions import ClientError

        if start < 0 or length < 0:
            msg = (
                f"invalid byte range start={start}, length={length} for {key!r}; both must be >= 0"
            )
            raise StorageError(msg)
        if length == 0:
            if not self.exists(key):
                raise self._error(_not_found(), key, "read")
            return b""
        try:
            return self._read_body(key, Range=f"bytes={start}-{start + length - 1}")
        except StorageError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in (
                "InvalidRange",
                "416",
            ):
                return b""  # past the end of the object
            raise

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self._check_writable(key)
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=bytes(data))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, key, "write") from exc

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except StoreNotFoundError:
            return False
        return True

    def _head(self, key: str) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, key, "stat") from exc

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key below the store that starts with ``prefix``, sorted (paginated).

        Parameters
        ----------
        prefix : str
            Plain string prefix, relative to the store's root; ``""`` lists the whole store.

        Yields
        ------
        str
            Keys relative to the store's root (all pages are read before the first is yielded).

        Raises
        ------
        StoragePermissionError
            If S3 denies the listing.
        StorageError
            If the listing fails after its retries.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        root = f"{self.prefix}/" if self.prefix else ""
        full = root + prefix.lstrip("/")
        keys = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(
                Bucket=self.bucket,
                Prefix=full,
                PaginationConfig={"PageSize": self.options.list_page_size},
            ):
                keys.extend(obj["Key"][len(root) :] for obj in page.get("Contents", ()))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, prefix, "list") from exc
        yield from sorted(keys)

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self._check_writable(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            err = self._error(exc, key, "delete")
            if not isinstance(err, StoreNotFoundError):
                raise err from exc

    # -- pre-signed URLs ----------------------------------------------------------------------
    def presigned_get_url(self, key: str, expires: int = 3600) -> str:
        """URL that lets its holder GET ``key`` for ``expires`` seconds, without credentials.

        Parameters
        ----------
        key : str
            Key relative to the store's root (it need not exist yet).
        expires : int
            Lifetime of the URL in seconds, 1 s to 7 days.

        Returns
        -------
        str
            The pre-signed ``GetObject`` URL.

        Raises
        ------
        StoragePermissionError
            If the store has no credentials to sign with (anonymous).
        StorageError
            If ``expires`` is outside 1 s .. 7 days.
        """
        return self._presign("get_object", key, expires)

    def presigned_put_url(self, key: str, expires: int = 3600) -> str:
        """URL that lets its holder PUT ``key`` for ``expires`` seconds (volunteer results).

        Parameters
        ----------
        key : str
            Key relative to the store's root.
        expires : int
            Lifetime of the URL in seconds, 1 s to 7 days.

        Returns
        -------
        str
            The pre-signed ``PutObject`` URL.

        Raises
        ------
        StoragePermissionError
            If the store has no credentials to sign with (anonymous).
        StorageError
            If the store is read-only or ``expires`` is outside 1 s .. 7 days.
        """
        self._check_writable(key)
        return self._presign("put_object", key, expires)

    def _presign(self, method: str, key: str, expires: int) -> str:
        if self.anonymous:
            msg = (
                f"cannot pre-sign a URL for s3://{self.bucket}/{self._key(key)}: the store uses "
                "anonymous requests; open it with credentials"
            )
            raise StoragePermissionError(msg)
        if not 1 <= int(expires) <= 7 * 24 * 3600:
            msg = f"expires={expires} s is outside 1 s .. 7 days, the range S3 accepts"
            raise StorageError(msg)
        return self.client.generate_presigned_url(
            method, Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=int(expires)
        )

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (for the project's own buckets)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError:
            pass
        try:
            region = self.client.meta.region_name
            kwargs = {}
            if region and region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            self.client.create_bucket(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "", "create bucket") from exc


def _not_found():
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": "NoSuchKey", "Message": "not found"}}, "HeadObject")
