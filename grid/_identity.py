"""Who a peer is, from its verified certificate (:class:`PeerIdentity`), and what enrolling a volunteer gives it (:class:`Enrollment`)."""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Enrollment", "PeerIdentity", "peer_identity"]


@dataclass(frozen=True)
class PeerIdentity:
    """Who is at the other end of a TLS connection, from its verified certificate."""

    cn: str
    role: str
    serial: int
    not_after: dt.datetime


def peer_identity(peercert: dict | None) -> PeerIdentity | None:
    """Identity from :meth:`ssl.SSLSocket.getpeercert` (``None`` when there is no certificate).

    Parameters
    ----------
    peercert : dict or None
        The decoded, already CA-verified peer certificate.

    Returns
    -------
    PeerIdentity or None
        CN, role (the OU), serial and expiry; None without a certificate or when its serial
        or expiry cannot be read.
    """
    if not peercert:
        return None
    subject = {k: v for rdn in peercert.get("subject", ()) for (k, v) in rdn}
    cn = subject.get("commonName", "")
    role = subject.get("organizationalUnitName", "")
    try:
        serial = int(peercert.get("serialNumber", "0"), 16)
        not_after = dt.datetime.strptime(peercert["notAfter"], "%b %d %H:%M:%S %Y %Z").replace(
            tzinfo=dt.UTC
        )
    except (KeyError, ValueError):
        return None
    return PeerIdentity(cn=cn, role=role, serial=serial, not_after=not_after)


@dataclass(frozen=True)
class Enrollment:
    """A volunteer's enrolment: certificate files, expiry and the command to run.

    Attributes
    ----------
    name : str
        Volunteer id (the certificate CN and the worker ``--name``).
    cert, key : pathlib.Path
        The volunteer's certificate and private key (hand both to the volunteer, with ``ca.pem``).
    not_after : datetime.datetime
        Expiry (UTC).
    serial : int
        Certificate serial number.
    """

    name: str
    cert: Path
    key: Path
    ca: Path
    not_after: dt.datetime
    serial: int

    def command(
        self,
        scheduler: str,
        *,
        nthreads: int = 1,
        memory_limit: str = "4GiB",
        lifetime: str = "8h",
    ) -> str:
        """The exact ``dask worker`` command the volunteer runs (one line).

        Parameters
        ----------
        scheduler : str
            The scheduler's address (``tls://host:8786``).
        nthreads : int
            Threads the volunteer gives.
        memory_limit : str
            Dask memory limit of the worker (``"4GiB"``).
        lifetime : str
            How long the worker runs before leaving gracefully (``"8h"``).

        Returns
        -------
        str
            A shell command: ``DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True dask worker ...``
            with the volunteer's TLS files, ``--name`` equal to its certificate CN, no nanny and
            the :mod:`grid.volunteer` preload.
        """
        args = [
            "dask",
            "worker",
            scheduler,
            "--tls-ca-file",
            self.ca.name,
            "--tls-cert",
            self.cert.name,
            "--tls-key",
            self.key.name,
            "--name",
            self.name,
            "--nthreads",
            str(nthreads),
            "--no-nanny",
            "--memory-limit",
            memory_limit,
            "--lifetime",
            lifetime,
            "--preload",
            "grid.volunteer",
        ]
        return "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True " + shlex.join(args)
