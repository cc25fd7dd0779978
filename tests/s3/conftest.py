"""Fixtures of the S3-specific tests: a fault-injecting proxy in front of the loopback server."""

from __future__ import annotations

import pytest

from tests._s3_support import FaultProxy


@pytest.fixture(scope="module")
def fault_proxy(s3_server):
    """An HTTP proxy in front of moto's server that can throttle, fail, deny or truncate."""
    proxy = FaultProxy(s3_server.host, s3_server.port)
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(fault_proxy):
    """The module's proxy, with no rules and an empty request log."""
    fault_proxy.clear()
    yield fault_proxy
    fault_proxy.clear()
