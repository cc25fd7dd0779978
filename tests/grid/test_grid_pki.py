"""Certificate authority, enrolment and the gate's admission rules (no network)."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest

from grid import EnrollmentError, GridAuthority, peer_identity


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    return GridAuthority.init(tmp_path_factory.mktemp("pki") / "grid")


def _peercert(path):
    """The decoded certificate as ssl.getpeercert() reports it."""
    return ssl._ssl._test_decode_cert(str(path))


def test_init_creates_ca_operator_and_scheduler(authority):
    d = authority.directory
    for name in ("ca.pem", "ca.key", "operator.pem", "operator.key", "ledger.key", "ledger.pub"):
        assert (d / name).is_file(), name
    for name in ("ca.key", "operator.key", "ledger.key"):
        assert (d / name).stat().st_mode & 0o077 == 0
    ident = peer_identity(_peercert(d / "operator.pem"))
    assert (ident.cn, ident.role) == ("hubcat-operator", "operator")
    # the scheduler's folder holds its own certificate, the CA certificate and the register,
    # and none of the operator's secrets
    sched = authority.scheduler_folder
    assert sorted(p.name for p in sched.iterdir()) == [
        "ca.pem",
        "enrolled.json",
        "scheduler.key",
        "scheduler.pem",
    ]
    assert GridAuthority(sched).secrets_present() == []
    ident = peer_identity(_peercert(sched / "scheduler.pem"))
    assert (ident.cn, ident.role) == ("hubcat-scheduler", "scheduler")


def test_register_reaches_the_scheduler_folder(authority):
    authority.enroll("vol-carol", days=1, account="carol@example.org")
    sched = GridAuthority(authority.scheduler_folder)
    assert sched.is_scheduler_folder
    assert sched.register()["volunteers"]["vol-carol"]["account"] == "carol@example.org"
    assert authority.accounts()["vol-carol"] == "carol@example.org"
    authority.revoke("vol-carol")
    assert sched.register()["volunteers"]["vol-carol"]["revoked"]
    with pytest.raises(EnrollmentError, match="scheduler's folder"):
        sched.enroll("vol-dave")


def test_init_refuses_existing_ca(authority):
    with pytest.raises(EnrollmentError, match="already holds a CA"):
        GridAuthority.init(authority.directory)


def test_open_missing_directory_says_what_to_do(tmp_path):
    with pytest.raises(EnrollmentError, match="hubcat grid init"):
        GridAuthority.open(tmp_path / "nope")


def test_enroll_issues_short_lived_certificate_and_command(authority):
    enr = authority.enroll("vol-alice", days=2)
    ident = peer_identity(_peercert(enr.cert))
    assert (ident.cn, ident.role, ident.serial) == ("vol-alice", "volunteer", enr.serial)
    left = ident.not_after - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=1.9) < left < dt.timedelta(days=2.1)
    cmd = enr.command("tls://sched.example.org:8786", nthreads=2)
    assert cmd.startswith("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True dask worker tls://sched")
    for part in (
        "--name vol-alice",
        "--tls-cert vol-alice.pem",
        "--tls-key vol-alice.key",
        "--preload grid.volunteer",
        "--nthreads 2",
    ):
        assert part in cmd
    assert authority.check_volunteer(ident, "vol-alice") is None


@pytest.mark.parametrize("name", ["", "A", "-x", "has space", "x" * 70, "hubcat-operator"])
def test_enroll_rejects_bad_names(authority, name):
    with pytest.raises(EnrollmentError, match="volunteer name"):
        authority.enroll(name)


def test_enroll_rejects_non_positive_days(authority):
    with pytest.raises(EnrollmentError, match="days=0"):
        authority.enroll("vol-zero", days=0)


def test_gate_rules(authority):
    enr = authority.enroll("vol-bob", days=1)
    ident = peer_identity(_peercert(enr.cert))
    assert "differs from its certificate CN" in authority.check_volunteer(ident, "vol-eve")
    assert "no client certificate" in authority.check_volunteer(None, "vol-bob")
    op = peer_identity(_peercert(authority.directory / "operator.pem"))
    assert "not 'volunteer'" in authority.check_volunteer(op, "hubcat-operator")
    # re-enrolment replaces the certificate: the old one is refused
    authority.enroll("vol-bob", days=1)
    assert "not its current one" in authority.check_volunteer(ident, "vol-bob")
    new = peer_identity(_peercert(authority.directory / "volunteers" / "vol-bob.pem"))
    assert authority.check_volunteer(new, "vol-bob") is None
    authority.revoke("vol-bob")
    assert "revoked" in authority.check_volunteer(new, "vol-bob")
    with pytest.raises(EnrollmentError, match="no volunteer named"):
        authority.revoke("vol-nobody")


def test_expired_certificate_is_refused_by_the_gate(authority):
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    enr = authority._issue("vol-old", "volunteer", days=1, not_before=past)
    ident = peer_identity(_peercert(enr.cert))
    assert "expired" in authority.check_volunteer(ident, "vol-old")
