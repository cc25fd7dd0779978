"""The grid's private certificate authority, enrolment of volunteers, and TLS settings.

One folder (the *grid directory*) holds everything the operator keeps; the scheduler is given
only its ``scheduler/`` sub-folder, which holds no secret of the operator's::

    ca.pem  ca.key            the private CA (the key never leaves the operator's machine)
    operator.pem  .key        the operator's client certificate (OU=operator)
    ledger.key  ledger.pub    Ed25519 key that signs the credit ledger (operator only)
    volunteers/NAME.pem .key  each volunteer's certificate (OU=volunteer, CN=NAME)
    enrolled.json             the register of volunteers (serial, expiry, account, revoked)
    scheduler/                what the scheduler host holds, and nothing else:
        ca.pem                  the CA certificate (public)
        scheduler.pem .key      the scheduler's certificate (OU=scheduler)
        enrolled.json           a copy of the register, rewritten on every enrol and revoke

Roles are carried by the certificates (the subject's OU, checked on every connection by
:mod:`grid._wire`). A volunteer's certificate is short-lived: expiry is the normal revocation;
``revoke`` removes the volunteer's workers from the scheduler within a second on top of it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
from pathlib import Path

from grid._identity import Enrollment, PeerIdentity, peer_identity
from grid.errors import EnrollmentError

__all__ = [
    "OPERATOR_CN",
    "SCHEDULER_CN",
    "Enrollment",
    "GridAuthority",
    "PeerIdentity",
    "peer_identity",
]

OPERATOR_CN = "hubcat-operator"
SCHEDULER_CN = "hubcat-scheduler"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,62}$")
REGISTER = "enrolled.json"
SCHEDULER_FOLDER = "scheduler"
#: Files that must never be in the folder a scheduler is given.
OPERATOR_SECRETS = ("ca.key", "operator.key", "ledger.key")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class GridAuthority:
    """The operator's certificate authority and register of enrolled volunteers.

    Use :meth:`init` once, then :meth:`open`.

    Parameters
    ----------
    directory : path-like
        The grid directory (see the module docstring).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser().absolute()
        if not (self.directory / "ca.pem").is_file():
            msg = (
                f"{self.directory} is not a grid directory (no ca.pem); "
                f"create one with `hubcat grid init {self.directory}`"
            )
            raise EnrollmentError(msg)

    # -- creation -----------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        directory: str | os.PathLike[str],
        *,
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
        days: int = 365,
    ) -> GridAuthority:
        """Create the CA, the scheduler's and the operator's certificates in ``directory``.

        Parameters
        ----------
        directory : path-like
            New or empty folder.
        hosts : tuple of str
            Host names / IP addresses of the scheduler (subject alternative names).
        days : int
            Validity of the CA, scheduler and operator certificates (days).

        Returns
        -------
        GridAuthority
            The new authority (also holding the ledger key pair and an empty register).

        Raises
        ------
        EnrollmentError
            If ``directory`` already holds a CA (re-initialising would orphan every volunteer).
        """
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        directory = Path(directory).expanduser().absolute()
        if (directory / "ca.pem").exists():
            msg = f"{directory} already holds a CA (ca.pem); use it, or choose an empty folder"
            raise EnrollmentError(msg)
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hubcat grid"),
                x509.NameAttribute(NameOID.COMMON_NAME, "hubcat grid CA"),
            ]
        )
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, _sha256())
        )
        _write_key(directory / "ca.key", key)
        (directory / "ca.pem").write_bytes(_pem(cert))
        (directory / REGISTER).write_text(json.dumps({"volunteers": {}}, indent=2))
        auth = cls(directory)
        auth._issue(OPERATOR_CN, "operator", days=days, stem="operator")
        auth._issue(SCHEDULER_CN, "scheduler", days=days, hosts=hosts, stem="scheduler")
        _write_ed25519(directory / "ledger.key", directory / "ledger.pub")
        auth._save_register(auth.register())
        return auth

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> GridAuthority:
        """Open an existing grid directory (one made before the ``scheduler/`` folder existed
        is brought up to date: its scheduler certificate moves there).

        Parameters
        ----------
        directory : path-like
            The operator's grid directory (made by :meth:`init`), or a scheduler's folder.

        Returns
        -------
        GridAuthority
        """
        auth = cls(directory)
        if (auth.directory / "ca.key").exists():
            auth._upgrade()
        return auth

    def _upgrade(self) -> None:
        folder = self.scheduler_folder
        if not (folder / "scheduler.pem").exists() and (self.directory / "scheduler.pem").exists():
            folder.mkdir(exist_ok=True)
            for name in ("scheduler.pem", "scheduler.key"):
                os.replace(self.directory / name, folder / name)
        if folder.is_dir():
            (folder / "ca.pem").write_bytes(self.ca_file.read_bytes())
            if (self.directory / REGISTER).exists() and not (folder / REGISTER).exists():
                self._save_register(self.register())
        if not (self.directory / "ledger.key").exists():
            _write_ed25519(self.directory / "ledger.key", self.directory / "ledger.pub")

    @property
    def is_scheduler_folder(self) -> bool:
        """Whether this directory is a scheduler's folder (no CA key: it cannot enrol)."""
        return not (self.directory / "ca.key").exists()

    @property
    def scheduler_folder(self) -> Path:
        """The folder the scheduler host is given (``scheduler/``; itself for such a folder)."""
        if self.is_scheduler_folder:
            return self.directory
        return self.directory / SCHEDULER_FOLDER

    @property
    def ledger_key_file(self) -> Path:
        """The Ed25519 key that signs the credit ledger (operator only)."""
        return self.directory / "ledger.key"

    def secrets_present(self) -> list[str]:
        """Operator secrets found in this directory (must be empty for a scheduler folder).

        Returns
        -------
        list of str
            Those of ``ca.key``, ``operator.key`` and ``ledger.key`` that exist here.
        """
        return [name for name in OPERATOR_SECRETS if (self.directory / name).exists()]

    # -- paths --------------------------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def cert_files(self, role: str) -> tuple[Path, Path]:
        """``(cert, key)`` of ``"operator"`` or ``"scheduler"``.

        Parameters
        ----------
        role : str
            ``"operator"`` or ``"scheduler"``.

        Returns
        -------
        tuple of (Path, Path)
            The PEM certificate and private key files.

        Raises
        ------
        EnrollmentError
            If ``role`` is another value, or the operator's files are asked of a scheduler's
            folder.
        """
        if role not in ("operator", "scheduler"):
            msg = f"role {role!r} has no certificate here; expected 'operator' or 'scheduler'"
            raise EnrollmentError(msg)
        folder = self.scheduler_folder if role == "scheduler" else self.directory
        if role == "operator" and self.is_scheduler_folder:
            msg = f"{self.directory} is a scheduler's folder: it holds no operator certificate"
            raise EnrollmentError(msg)
        return folder / f"{role}.pem", folder / f"{role}.key"

    def security(self, role: str = "operator"):
        """A :class:`distributed.Security` with TLS required, for ``"operator"`` or ``"scheduler"``.

        For the operator this also installs the grid's wire in this process
        (:func:`grid._wire.install_wire`): the client then refuses a scheduler that does not
        present the *scheduler* certificate, and accepts no incoming connection.

        Parameters
        ----------
        role : str
            ``"operator"`` (client certificate) or ``"scheduler"`` (scheduler certificate).

        Returns
        -------
        distributed.Security
            With this grid's CA and ``require_encryption=True``.

        Raises
        ------
        EnrollmentError
            As :meth:`cert_files`.
        """
        from distributed import Security

        if role == "operator":
            from grid._wire import WirePolicy, install_wire

            install_wire(WirePolicy("operator"))

        cert, key = self.cert_files(role)
        kwargs = {
            "tls_ca_file": str(self.ca_file),
            "require_encryption": True,
        }
        if role == "operator":
            kwargs.update(tls_client_cert=str(cert), tls_client_key=str(key))
        else:
            kwargs.update(tls_scheduler_cert=str(cert), tls_scheduler_key=str(key))
        return Security(**kwargs)

    # -- register -----------------------------------------------------------------------
    def register(self) -> dict:
        """The register of enrolled volunteers (``{"volunteers": {name: {...}}}``).

        Returns
        -------
        dict
            Read from the directory's register file on each call; each volunteer's entry holds
            its certificate ``serial``, and ``revoked`` once revoked.
        """
        return json.loads((self.directory / REGISTER).read_text())

    def _save_register(self, reg: dict) -> None:
        text = json.dumps(reg, indent=2, sort_keys=True)
        folders = [self.directory]
        if not self.is_scheduler_folder and self.scheduler_folder.is_dir():
            folders.append(self.scheduler_folder)
        for folder in folders:
            path = folder / REGISTER
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)

    def accounts(self) -> dict[str, str]:
        """Each enrolled volunteer's enrolment account (the person or organisation behind it).

        Returns
        -------
        dict of str to str
            Volunteer name to account; a volunteer enrolled without one is its own account.
        """
        return {
            name: str(entry.get("account") or name)
            for name, entry in self.register()["volunteers"].items()
        }

    def enroll(self, name: str, *, days: float = 30, account: str | None = None) -> Enrollment:
        """Issue a short-lived certificate for volunteer ``name`` (CN = ``name``).

        Parameters
        ----------
        name : str
            Volunteer id: 2-63 characters of ``a-z 0-9 . _ -``, starting with a letter or digit.
        days : float
            Validity (days); expiry is the normal revocation, so keep it short.
        account : str or None
            The enrolment account (person or organisation) behind this volunteer; replicas of
            one unit always go to volunteers of different accounts. Default: ``name``.

        Returns
        -------
        Enrollment

        Raises
        ------
        EnrollmentError
            If the name is malformed, reserved, or ``days`` is not positive.
        """
        if not NAME_RE.match(name or ""):
            msg = (
                f"volunteer name {name!r} is invalid: use 2-63 characters of a-z, 0-9, '.', '_' "
                "or '-', starting with a letter or digit (for example 'vol-alice')"
            )
            raise EnrollmentError(msg)
        if name in (OPERATOR_CN, SCHEDULER_CN):
            msg = f"volunteer name {name!r} is reserved; choose another"
            raise EnrollmentError(msg)
        if not days > 0:
            msg = f"days={days!r} is invalid: a certificate must be valid for a positive time"
            raise EnrollmentError(msg)
        if self.is_scheduler_folder:
            msg = (
                f"{self.directory} is a scheduler's folder: enrol volunteers in the grid directory"
            )
            raise EnrollmentError(msg)
        return self._issue(name, "volunteer", days=days, account=account)

    def revoke(self, name: str) -> None:
        """Refuse volunteer ``name`` from now on (its certificate stays valid for TLS only).

        Parameters
        ----------
        name : str
            The enrolled volunteer's name.

        Raises
        ------
        EnrollmentError
            If no volunteer of that name is enrolled.
        """
        reg = self.register()
        if name not in reg["volunteers"]:
            msg = f"no volunteer named {name!r} is enrolled; `hubcat grid status` lists them"
            raise EnrollmentError(msg)
        reg["volunteers"][name]["revoked"] = True
        self._save_register(reg)

    def check_volunteer(self, ident: PeerIdentity | None, name: str | None) -> str | None:
        """Why volunteer ``ident`` may not join as worker ``name`` (``None`` when it may).

        Parameters
        ----------
        ident : PeerIdentity or None
            The identity of the connection's verified certificate (:func:`peer_identity`).
        name : str or None
            The worker's ``--name``.

        Returns
        -------
        str or None
            The reason for refusing (no certificate, not a volunteer role, name differs from
            the CN, not enrolled, not the current certificate, revoked, expired), or None.
        """
        if ident is None:
            return "no client certificate was presented"
        if ident.role != "volunteer":
            return f"certificate CN={ident.cn!r} has role {ident.role!r}, not 'volunteer'"
        if str(name) != ident.cn:
            return f"worker --name {name!r} differs from its certificate CN {ident.cn!r}"
        entry = self.register()["volunteers"].get(ident.cn)
        if entry is None:
            return f"{ident.cn!r} is not enrolled"
        if int(entry["serial"]) != ident.serial:
            return f"{ident.cn!r} presented a certificate that is not its current one"
        if entry.get("revoked"):
            return f"{ident.cn!r} has been revoked"
        if ident.not_after <= _now():
            return f"the certificate of {ident.cn!r} expired at {ident.not_after:%Y-%m-%d %H:%M}Z"
        return None

    # -- issuing ------------------------------------------------------------------------
    def _issue(
        self,
        cn: str,
        role: str,
        *,
        days: float,
        hosts: tuple[str, ...] = (),
        stem: str | None = None,
        not_before: dt.datetime | None = None,
        account: str | None = None,
    ) -> Enrollment:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        ca_key = serialization.load_pem_private_key(
            (self.directory / "ca.key").read_bytes(), password=None
        )
        ca_cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or (_now() - dt.timedelta(minutes=5))
        not_after = start + dt.timedelta(days=days) + dt.timedelta(minutes=5)
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hubcat grid"),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                        x509.NameAttribute(NameOID.COMMON_NAME, cn),
                    ]
                )
            )
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
        )
        if hosts:
            sans: list[x509.GeneralName] = []
            for h in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    sans.append(x509.DNSName(h))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, _sha256())
        if stem is None:
            folder = self.directory / "volunteers"
        elif role == "scheduler":
            folder = self.directory / SCHEDULER_FOLDER
            (folder / "ca.pem").parent.mkdir(exist_ok=True)
            (folder / "ca.pem").write_bytes(self.ca_file.read_bytes())
        else:
            folder = self.directory
        folder.mkdir(exist_ok=True)
        name = cn if stem is None else stem
        cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
        _write_key(key_path, key)
        cert_path.write_bytes(_pem(cert))
        if role == "volunteer":
            reg = self.register()
            reg["volunteers"][cn] = {
                "serial": str(serial),
                "not_after": not_after.isoformat(),
                "enrolled_at": _now().isoformat(),
                "account": account or cn,
                "revoked": False,
            }
            self._save_register(reg)
        return Enrollment(
            name=cn,
            cert=cert_path,
            key=key_path,
            ca=self.ca_file,
            not_after=not_after,
            serial=serial,
        )


def _sha256():
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def _pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _write_ed25519(private: Path, public: Path) -> None:
    """A new Ed25519 key pair (PEM; the private key readable by its owner only)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    _write_key(private, key)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _write_key(path: Path, key) -> None:
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
