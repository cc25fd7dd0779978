"""The grid's wire: who may open a connection, and how the frames of an untrusted peer are read.

Dask decodes every incoming message before any handler sees it, and its decoder
(``distributed.protocol.core.loads``) unpickles every ``__Pickled__`` part whatever the comm's
``deserialize`` flag, deserialises ``__Serialized__`` parts when it is set, and imports modules
for ``__Enum__`` parts. A gate on handler names therefore comes too late. This module replaces
Dask's ``tls://`` comm backend, in the processes of the grid only, by one that decides *per
connection, from the peer's verified certificate*, before a single frame is read:

* whether the connection is allowed at all (a volunteer's worker accepts only the scheduler;
  every process checks that the peer it dials is the role it expects, e.g. that the scheduler
  presents the *scheduler* certificate and not a volunteer's);
* whether the peer is **trusted** (its frames are read by Dask's own decoder) or **untrusted**
  (a volunteer, as seen by the scheduler): its frames are size-capped before they are read and
  decoded by :func:`inert_loads`, which never unpickles, never deserialises, never imports; a
  pickled or serialised part becomes an :class:`Opaque` marker that carries no bytes, and the
  process's *message filter* (:mod:`grid._boundary` on the scheduler) then decides, message by
  message, what a volunteer may say.

Which policy applies is set once per process by :func:`install_wire` (``grid.gate`` for the
scheduler, ``grid.volunteer`` for a volunteer's worker, :meth:`grid.GridAuthority.security` for
the operator). Processes that never call it (a ``LocalCluster``, ``tcp://`` clusters) are
untouched.

The reader mirrors ``distributed.comm.tcp.TCP.read`` of the releases in
:data:`DISTRIBUTED_RANGE`, the range ``pyproject.toml`` pins and a test checks.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from grid._identity import PeerIdentity, peer_identity

__all__ = [
    "DISTRIBUTED_RANGE",
    "MAX_UNTRUSTED_MESSAGE",
    "Opaque",
    "WirePolicy",
    "contains_opaque",
    "inert_loads",
    "install_wire",
    "installed_policy",
]

logger = logging.getLogger("grid.wire")

#: The ``distributed`` releases this reader was written against and is tested on.
DISTRIBUTED_RANGE = (">=2026.8.0", "<2026.9")

#: Largest message (all frames together) an untrusted peer may send, in bytes. A worker's
#: largest legitimate message is its registration (~20 kB); task reports are a few hundred bytes.
MAX_UNTRUSTED_MESSAGE = 4 * 2**20

#: Enum members an untrusted peer may name (``__Enum__`` parts import their module otherwise).
ALLOWED_ENUMS = frozenset({("distributed.core", "Status")})


class Opaque:
    """Stands where an untrusted peer sent a pickled or serialised part; holds none of its bytes.

    Attributes
    ----------
    kind : str
        ``"pickled"``, ``"serialized"`` or ``"enum"``.
    """

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<opaque {self.kind} part, not decoded>"

    def __reduce__(self):  # never let one travel on to another process
        msg = "an opaque part of an untrusted message cannot be forwarded"
        raise TypeError(msg)


def contains_opaque(obj, depth: int = 0) -> bool:
    """Whether ``obj`` (a decoded message) holds an :class:`Opaque` part anywhere."""
    if isinstance(obj, Opaque):
        return True
    if depth > 64:
        return True  # deeper than any Dask message: treat as hostile
    if isinstance(obj, dict):
        return any(
            contains_opaque(k, depth + 1) or contains_opaque(v, depth + 1) for k, v in obj.items()
        )
    if isinstance(obj, (list, tuple, set, frozenset)):
        return any(contains_opaque(v, depth + 1) for v in obj)
    return False


def _inert_hook(obj: dict):
    if "__Pickled__" in obj:
        return Opaque("pickled")
    if "__Serialized__" in obj:
        return Opaque("serialized")
    if "__Enum__" in obj:
        mod, name = obj.get("__module__"), obj.get("__name__")
        if (mod, name) in ALLOWED_ENUMS and isinstance(obj.get("name"), str):
            import importlib

            enum = getattr(importlib.import_module(mod), name)
            member = obj["name"]
            if member in enum.__members__:
                return enum[member]
        return Opaque("enum")
    if "__Set__" in obj:
        items = obj.get("as-list")
        return set(items) if isinstance(items, (list, tuple)) else Opaque("set")
    return obj


def inert_loads(frames: list) -> object:
    """Decode Dask frames without unpickling, deserialising or importing anything.

    Parameters
    ----------
    frames : list of bytes-like
        A message's frames as read from the wire (the first is the msgpack body).

    Returns
    -------
    object
        The message, with :class:`Opaque` wherever a pickled, serialised or unknown enum part
        stood (the sub-frames of those parts are never looked at).

    Raises
    ------
    ValueError
        If the first frame is not valid msgpack.
    """
    import msgpack

    if not frames:
        msg = "an empty message"
        raise ValueError(msg)
    return msgpack.loads(
        frames[0],
        object_hook=_inert_hook,
        use_list=False,
        strict_map_key=False,
        raw=False,
    )


#: ``filter(comm, message) -> message`` applied to every message read from an untrusted peer.
MessageFilter = Callable[[object, object], Awaitable[object]]


@dataclass
class WirePolicy:
    """Who a process accepts and dials, and how it reads untrusted peers.

    Parameters
    ----------
    role : str
        This process's role: ``"scheduler"``, ``"volunteer"`` or ``"operator"``.
    message_filter : callable or None
        Coroutine ``filter(comm, msg)`` run on every message from an untrusted peer (scheduler).
    expected_worker_cn : callable or None
        ``expected_worker_cn(address)``: the certificate CN the worker at ``address`` must
        present when this process dials it (scheduler), or ``None`` when no worker is known there.
    max_message : int
        Size cap of an untrusted peer's message (bytes).
    """

    role: str
    message_filter: MessageFilter | None = None
    expected_worker_cn: Callable[[str], str | None] | None = None
    max_message: int = MAX_UNTRUSTED_MESSAGE

    def accept(self, peer: PeerIdentity | None) -> tuple[bool, bool, str]:
        """``(allowed, trusted, reason)`` for an incoming connection from ``peer``."""
        role = peer.role if peer else None
        if self.role == "scheduler":
            if role == "operator":
                return True, True, ""
            if role == "volunteer":
                return True, False, ""
            return False, False, f"a scheduler accepts operators and volunteers, not {_who(peer)}"
        if self.role == "volunteer":
            if role == "scheduler":
                return True, True, ""
            return (
                False,
                False,
                f"a volunteer's worker accepts the scheduler only, not {_who(peer)}",
            )
        return False, False, f"the operator's process accepts no connection ({_who(peer)})"

    def dial(self, peer: PeerIdentity | None, address: str) -> tuple[bool, bool, str]:
        """``(allowed, trusted, reason)`` for a connection this process opened to ``address``."""
        role = peer.role if peer else None
        if self.role in ("volunteer", "operator"):
            if role == "scheduler":
                return True, True, ""
            return (
                False,
                False,
                (
                    f"{address} presented {_who(peer)}, not the grid scheduler's certificate: "
                    "refusing to talk to it (check the scheduler address)"
                ),
            )
        # the scheduler dials workers: volunteers, read as untrusted peers
        if role != "volunteer":
            return False, False, f"{address} presented {_who(peer)}, not a volunteer's certificate"
        expected = self.expected_worker_cn(address) if self.expected_worker_cn else None
        if expected is not None and peer.cn != expected:
            return (
                False,
                False,
                (
                    f"{address} presented the certificate of {peer.cn!r}, but worker {expected!r} "
                    "registered that address"
                ),
            )
        return True, False, ""


def _who(peer: PeerIdentity | None) -> str:
    if peer is None:
        return "a peer without a certificate"
    return f"a certificate with role {peer.role or 'none'!r} (CN={peer.cn!r})"


_POLICY: WirePolicy | None = None


def installed_policy() -> WirePolicy | None:
    """The policy installed in this process (``None``: Dask's own ``tls://`` backend)."""
    return _POLICY


def install_wire(policy: WirePolicy) -> None:
    """Replace Dask's ``tls://`` backend in this process by the gated one, with ``policy``.

    Idempotent for the same role; the policy's filter and callbacks may be set later (the
    scheduler's gate sets them once the scheduler object exists).

    Raises
    ------
    grid.errors.GridError
        If another role's policy is already installed in this process.
    """
    global _POLICY
    from distributed.comm import registry

    from grid.errors import GridError

    if _POLICY is not None and _POLICY.role != policy.role:
        msg = (
            f"this process already speaks as the grid's {_POLICY.role}; it cannot also be its "
            f"{policy.role} (run each role in its own process)"
        )
        raise GridError(msg)
    if _POLICY is None:
        _POLICY = policy
    else:
        _POLICY.message_filter = policy.message_filter or _POLICY.message_filter
        _POLICY.expected_worker_cn = policy.expected_worker_cn or _POLICY.expected_worker_cn
    registry.backends["tls"] = _backend()


def _policy() -> WirePolicy:
    if _POLICY is None:  # pragma: no cover - the backend is only installed with a policy
        msg = "no grid wire policy installed"
        raise RuntimeError(msg)
    return _POLICY


_CLASSES: dict[str, type] = {}


def _backend():
    """The gated backend (classes built once, lazily, so that importing this module is cheap)."""
    if "backend" in _CLASSES:
        return _CLASSES["backend"]()
    from ssl import SSLError

    from distributed.comm.core import CommClosedError, FatalCommClosedError
    from distributed.comm.tcp import (
        TLS,
        TLSBackend,
        TLSConnector,
        TLSListener,
        convert_stream_closed_error,
        read_bytes_rw,
    )
    from distributed.protocol.utils import unpack_frames
    from tornado.iostream import StreamClosedError

    class GatedTLS(TLS):
        """A TLS comm that knows its peer's role and reads an untrusted peer inertly."""

        def __init__(self, stream, local_addr, peer_addr, deserialize=True):
            super().__init__(stream, local_addr, peer_addr, deserialize)
            self.hubcat_peer = peer_identity(self._extra.get("peercert"))
            self.hubcat_trusted = bool(getattr(stream, "hubcat_trusted", False))
            self.hubcat_worker: str | None = None  # set by the scheduler's filter on register
            self.hubcat_dialed = False  # this process opened the connection

        async def read(self, deserializers=None):
            if self.hubcat_trusted:
                return await super().read(deserializers)
            policy = _policy()
            msg = await self._read_inert(policy.max_message)
            if self.hubcat_dialed:  # a reply from a worker this scheduler called
                if contains_opaque(msg):
                    self.abort()
                    raise CommClosedError(
                        f"{self.peer_address} sent a pickled or serialised part: closed"
                    )
                return msg
            if policy.message_filter is None:  # the gate is not ready: admit nothing yet
                self.abort()
                raise CommClosedError("the scheduler's gate is not installed yet")
            return await policy.message_filter(self, msg)

        async def _read_inert(self, cap: int):
            stream = self.stream
            if stream is None:
                raise CommClosedError()
            try:
                head = await stream.read_bytes(8)
                (nbytes,) = struct.unpack("Q", head)
                if nbytes > cap:
                    self._refuse_size(nbytes, cap)
                body = await read_bytes_rw(stream, nbytes)
                frames, buffers = unpack_frames(body, partial=True)
                if nbytes + sum(buffers) > cap:
                    self._refuse_size(nbytes + sum(buffers), cap)
                for size in buffers:
                    frames.append(await read_bytes_rw(stream, size))
            except (StreamClosedError, SSLError) as exc:
                self.stream = None
                self._closed = True
                convert_stream_closed_error(self, exc)
            except BaseException:
                self.abort()
                raise
            try:
                return inert_loads(frames)
            except Exception as exc:
                logger.warning("closed %s: undecodable message (%s)", self.peer_address, exc)
                self.abort()
                raise CommClosedError(f"{self.peer_address} sent an undecodable message") from exc

        def _refuse_size(self, nbytes: int, cap: int):
            who = self.hubcat_peer.cn if self.hubcat_peer else self.peer_address
            logger.warning(
                "closed the connection of %s: a %d-byte message (cap %d)", who, nbytes, cap
            )
            self.abort()
            raise CommClosedError(f"message of {nbytes} bytes from {who} exceeds {cap} bytes")

    class GatedTLSConnector(TLSConnector):
        comm_class = GatedTLS

        async def connect(self, address, deserialize=True, **connection_args):
            comm = await super().connect(address, deserialize, **connection_args)
            allowed, trusted, reason = _policy().dial(comm.hubcat_peer, address)
            if not allowed:
                comm.abort()
                logger.error("refused to talk to %s: %s", address, reason)
                raise FatalCommClosedError(f"hubcat grid: {reason}")
            comm.hubcat_trusted = trusted
            comm.hubcat_dialed = True
            return comm

    class GatedTLSListener(TLSListener):
        comm_class = GatedTLS

        async def _prepare_stream(self, stream, address):
            stream = await super()._prepare_stream(stream, address)
            if stream is None:
                return None
            sock = stream.socket
            peer = peer_identity(sock.getpeercert() if sock is not None else None)
            allowed, trusted, reason = _policy().accept(peer)
            if not allowed:
                logger.warning("refused a connection from %s: %s", address, reason)
                stream.close()
                return None
            stream.hubcat_trusted = trusted
            return stream

    class GatedTLSBackend(TLSBackend):
        _connector_class = GatedTLSConnector
        _listener_class = GatedTLSListener

    _CLASSES.update(
        backend=GatedTLSBackend,
        listener=GatedTLSListener,
        comm=GatedTLS,
        connector=GatedTLSConnector,
    )
    return GatedTLSBackend()


def gate_listeners(server) -> None:
    """Make ``server``'s existing ``tls://`` listeners gated and close comms they already made.

    A preload runs after the server started listening; this switches those listeners to the
    gated classes (their accept callback looks the classes up per connection) and aborts any
    connection accepted before, so that none escapes the policy.

    Raises
    ------
    grid.errors.GridError
        If a listener is not a TLS listener (the grid runs over TLS only).
    """
    from distributed.comm.tcp import TLSListener

    from grid.errors import GridError

    _backend()
    gated = _CLASSES["listener"]
    for listener in server.listeners:
        if isinstance(listener, gated):
            continue
        if not isinstance(listener, TLSListener):
            msg = (
                f"{type(server).__name__} listens on {listener.contact_address}, which is not "
                "tls://: the grid runs over TLS only (set distributed.comm.require-encryption)"
            )
            raise GridError(msg)
        listener.__class__ = gated
    for comm in list(getattr(server, "_comms", {})):
        if not isinstance(comm, _CLASSES["comm"]):
            comm.abort()
