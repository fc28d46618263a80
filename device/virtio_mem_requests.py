"""vmemlab's experimental guest -> host request queue for virtio-mem (NOT in any virtio spec).

The 2017 RFC's addendum (28 Jul 2017) proposed "a guest -> host command queue ... used to
request/notify the host about something ... to request more/less memory out of the guest".
Shipped virtio-mem (virtio 1.2 §5.15) has exactly one queue, guest-request, on which the
guest only carries out what the host set in ``requested_size``; the host alone decides. This
module is the addendum as an *experiment*, clearly labelled:

* feature bit :data:`VIRTIO_MEM_F_X_GUEST_REQUESTS` (62, in the device-specific range, chosen
  by vmemlab; no spec assigns it) offered only with the device property
  ``x-guest-requests=on``;
* a second virtqueue (index 1, "x-host-request") whose buffers are one request (readable,
  :data:`X_REQUEST_SIZE` bytes) and one response (writable, :data:`X_RESPONSE_SIZE` bytes);
* the host decides with a **policy** the user picks (:class:`Policy`): deny everything,
  grant up to a cap, grant with a rate limit (a token bucket), or ask the presenter (the
  buffer is held until someone answers). A grant only raises ``requested_size`` -- the
  memory then arrives through the ordinary PLUG path, exactly as after ``qom-set``.

Wire format (little-endian)::

    struct virtio_mem_x_guest_req {      /* 64 bytes */
        le16 type;        /* 0 NEED: "need N bytes on node K"; 1 OFFER: "take N bytes back" */
        le16 node_id;     /* the NUMA node the guest wants the memory on */
        le8  padding[4];
        le64 size;        /* bytes; rounded up to the device block size */
        char reason[48];  /* free text, NUL padded ("grow: alloc of 64 MiB failed") */
    };
    struct virtio_mem_x_guest_resp {     /* 24 bytes */
        le16 type;        /* 0 GRANTED, 1 PARTIAL, 2 DENIED */
        le8  padding[6];
        le64 granted;     /* bytes by which requested_size moved (0 when denied) */
        le64 requested_size;  /* the device's requested_size after the decision */
    };

Malformed buffers are protocol violations (the device is marked broken, as QEMU's
``virtio_error`` does): a request shorter than 64 bytes, a response buffer shorter than 24
bytes, an unknown type. Everything else is answered; nothing a guest sends raises anything
else.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from device.errors import ConfigError, ProtocolViolation
from device.events import GuestMemRequest
from device.virtio_mem_types import VIRTIO_MEM_F_X_GUEST_REQUESTS
from device.virtqueue import Chain, SplitVirtqueue

if TYPE_CHECKING:
    from device.virtio_mem import VirtioMemDevice

__all__ = ["VIRTIO_MEM_F_X_GUEST_REQUESTS", "GuestRequests", "Policy"]

X_REQUEST_QUEUE = 1

X_REQ_NEED = 0
X_REQ_OFFER = 1
X_RESP_GRANTED = 0
X_RESP_PARTIAL = 1
X_RESP_DENIED = 2
REQUEST_TYPES = {X_REQ_NEED: "need", X_REQ_OFFER: "offer"}
RESPONSE_TYPES = {X_RESP_GRANTED: "granted", X_RESP_PARTIAL: "partial", X_RESP_DENIED: "denied"}

REASON_LEN = 48
_REQ = struct.Struct(f"<HH4xQ{REASON_LEN}s")
_RESP = struct.Struct("<H6xQQ")
X_REQUEST_SIZE = _REQ.size  # 64
X_RESPONSE_SIZE = _RESP.size  # 24
LOG_LENGTH = 64  # requests the host remembers per device (``info virtio-mem-requests``)


class Policy(StrEnum):
    """How the host answers a guest's request."""

    DENY = "deny"  # the shipped design: the guest has no say
    CAP = "cap"  # grant while requested_size stays <= cap
    RATE = "rate"  # grant at most ``rate`` bytes per ``period`` seconds (token bucket)
    ASK = "ask"  # hold the request until the presenter answers


@dataclass(frozen=True)
class PolicyConfig:
    policy: Policy = Policy.DENY
    cap: int = 0  # CAP: the largest requested_size a grant may reach (bytes)
    rate: int = 0  # RATE: bytes per period
    period: float = 10.0  # RATE: seconds

    def to_dict(self) -> dict[str, Any]:
        return {"policy": str(self.policy), "cap": self.cap, "rate": self.rate,
                "period": self.period}


@dataclass(frozen=True)
class XRequest:
    type: int
    node_id: int
    size: int
    reason: str


@dataclass
class RequestRecord:
    """One request as the host saw it and what it decided (``info virtio-mem-requests``)."""

    seq: int
    type: str
    node_id: int
    size: int
    reason: str
    policy: str
    decision: str = "pending"  # granted / partial / denied / pending / dropped
    granted: int = 0
    note: str = ""
    wall: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "node": self.node_id, "size": self.size,
                "reason": self.reason, "policy": self.policy, "decision": self.decision,
                "granted": self.granted, "note": self.note}


def pack_request(req_type: int, size: int, node_id: int = 0, reason: str = "") -> bytes:
    return _REQ.pack(req_type, node_id, size, reason.encode("ascii", "replace")[:REASON_LEN])


def unpack_request(data: bytes) -> XRequest:
    """Decode the first 64 bytes; the reason is cut at the first NUL and made printable."""
    req_type, node, size, raw = _REQ.unpack_from(data, 0)
    text = raw.split(b"\0", 1)[0].decode("ascii", "replace")
    reason = "".join(ch if ch.isprintable() else "?" for ch in text)
    return XRequest(req_type, node, size, reason)


def pack_response(resp_type: int, granted: int, requested_size: int) -> bytes:
    return _RESP.pack(resp_type, granted, requested_size)


def unpack_response(data: bytes) -> tuple[int, int, int]:
    resp_type, granted, requested = _RESP.unpack_from(data, 0)
    return resp_type, granted, requested


class GuestRequests:
    """The host side of one device's request queue: policy, decisions, the held buffer.

    ``clock`` (seconds, monotonic) is injectable so the rate limit can be tested exactly.
    The transport binds ``current_queue``, ``notify_used`` and ``process`` when it attaches.
    """

    def __init__(self, device: VirtioMemDevice, emit: Callable[[GuestMemRequest], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._dev = device
        self._emit = emit
        self._clock = clock
        self.config = PolicyConfig()
        self.log: deque[RequestRecord] = deque(maxlen=LOG_LENGTH)
        self._seq = 0
        self._held: tuple[Chain, RequestRecord, XRequest] | None = None
        self._tokens = 0.0
        self._refilled = clock()
        self.current_queue: Callable[[int], SplitVirtqueue | None] = lambda _i: None
        self.notify_used: Callable[[int], None] = lambda _i: None
        self.process: Callable[[int], int] = lambda _i: 0
        """Process the queue again (the transport's, which contains any ring error)."""

    # ---------------------------------------------------------------- policy

    def set_policy(self, policy: str, *, cap: int | None = None, rate: int | None = None,
                   period: float | None = None) -> None:
        """Pick the policy; sizes must be multiples of the block size (the device's unit)."""
        try:
            chosen = Policy(policy)
        except ValueError:
            raise ConfigError(f"Parameter 'policy' does not accept value '{policy}' "
                              f"(deny, cap, rate, ask)") from None
        bs = self._dev.block_size
        for name, value in (("cap", cap), ("rate", rate)):
            if value is not None and (value < 0 or value % bs):
                raise ConfigError(f"'{name}' has to be multiples of 'block-size' ({bs:#x})")
        if period is not None and not 0.1 <= period <= 86_400:
            raise ConfigError("'period' has to be between 0.1 and 86400 seconds")
        cfg = self.config
        self.config = replace(cfg, policy=chosen, cap=cfg.cap if cap is None else cap,
                              rate=cfg.rate if rate is None else rate,
                              period=cfg.period if period is None else period)
        self._tokens = float(self.config.rate)
        self._refilled = self._clock()

    @property
    def pending(self) -> RequestRecord | None:
        """The request waiting for the presenter (ASK), if any."""
        return self._held[1] if self._held is not None else None

    # ---------------------------------------------------------------- the queue

    def serve(self, vq: SplitVirtqueue) -> int:
        """Handle available buffers of the request queue; stops while one is held (ASK)."""
        done = 0
        while self._held is None and (chain := vq.pop()) is not None:
            if len(chain.read(X_REQUEST_SIZE)) < X_REQUEST_SIZE:
                raise ProtocolViolation("virtio-mem protocol violation: invalid request "
                                        f"size: {X_REQUEST_SIZE} (x-host-request queue)")
            if chain.writable_len < X_RESPONSE_SIZE:
                raise ProtocolViolation("virtio-mem protocol violation: not enough space for "
                                        f"response: {chain.writable_len} (x-host-request queue)")
            req = unpack_request(chain.read(X_REQUEST_SIZE))
            if req.type not in REQUEST_TYPES:
                raise ProtocolViolation("virtio-mem protocol violation: unknown request type: "
                                        f"{req.type} (x-host-request queue)")
            record = self._record(req)
            if self.config.policy is Policy.ASK and self._answerable(req, record):
                self._held = (chain, record, req)
                self._emit(self._event(record))
                break
            self._finish(chain, record, req, vq, decided=self._decide(req, record))
            done += 1
        return done

    def answer(self, grant: bool, size: int | None = None) -> RequestRecord:
        """The presenter's answer to the held request: grant (``size`` bytes, default the
        asked size) or deny. ConfigError if nothing is pending or the size is bad."""
        if self._held is None:
            raise ConfigError(f"device '{self._dev.id}' has no pending guest request")
        chain, record, req = self._held
        amount = record.size if size is None else size  # rounded up to blocks
        if amount < 0 or amount % self._dev.block_size:
            raise ConfigError(
                f"'size' has to be multiples of 'block-size' ({self._dev.block_size:#x})")
        vq = self.current_queue(X_REQUEST_QUEUE)
        self._held = None
        decided = self._apply(req, record, amount if grant else 0,
                              "" if grant else "the presenter said no")
        if vq is not None:
            self._finish(chain, record, req, vq, decided=decided)
            self.notify_used(X_REQUEST_QUEUE)
            self.process(X_REQUEST_QUEUE)  # buffers that waited behind the held one
        else:
            self._emit(self._event(record))
        return record

    def reset(self, why: str) -> None:
        """A device or system reset drops the held buffer (the ring is gone)."""
        if self._held is not None:
            record = self._held[1]
            record.decision, record.note = "dropped", why
            self._held = None
            self._emit(self._event(record))

    # ---------------------------------------------------------------- decisions

    def _record(self, req: XRequest) -> RequestRecord:
        self._seq += 1
        size = -(-req.size // self._dev.block_size) * self._dev.block_size
        record = RequestRecord(self._seq, REQUEST_TYPES[req.type], req.node_id, size,
                               req.reason, str(self.config.policy))
        self.log.append(record)
        return record

    def _answerable(self, req: XRequest, record: RequestRecord) -> bool:
        """Whether the request can be granted at all (else it is denied at once)."""
        return req.node_id == self._dev.node_id and record.size > 0

    def _decide(self, req: XRequest, record: RequestRecord) -> int:
        """Apply the policy; returns the response type."""
        cfg = self.config
        if not self._answerable(req, record):
            note = (f"node {req.node_id} is not this device's node ({self._dev.node_id})"
                    if req.node_id != self._dev.node_id else "nothing asked for")
            return self._apply(req, record, 0, note)
        if cfg.policy is Policy.DENY:
            return self._apply(req, record, 0, "policy: deny")
        if req.type == X_REQ_OFFER:
            return self._apply(req, record, record.size, "")
        if cfg.policy is Policy.CAP:
            room = max(0, cfg.cap - self._dev.requested_size)
            return self._apply(req, record, min(record.size, room),
                               "" if room else f"cap {cfg.cap:#x} reached")
        # RATE: a token bucket of ``rate`` bytes, refilled at rate/period per second
        now = self._clock()
        if cfg.period > 0:
            self._tokens = min(float(cfg.rate), self._tokens
                               + (now - self._refilled) * cfg.rate / cfg.period)
        self._refilled = now
        bs = self._dev.block_size
        allowed = min(record.size, int(self._tokens) // bs * bs)
        self._tokens -= allowed
        return self._apply(req, record, allowed, "" if allowed else "rate limit")

    def _apply(self, req: XRequest, record: RequestRecord, amount: int, note: str) -> int:
        """Move requested_size by ``amount`` (within the region) and fill in the record."""
        dev = self._dev
        if req.type == X_REQ_NEED:
            amount = min(amount, dev.region_size - dev.requested_size)
            target = dev.requested_size + amount
        else:
            amount = min(amount, dev.requested_size)
            target = dev.requested_size - amount
        if amount > 0:
            dev.set_requested_size(target)
        record.granted = max(0, amount)
        if amount <= 0:
            record.decision, resp = "denied", X_RESP_DENIED
            record.note = note or "nothing left to give"
        elif amount < record.size:
            record.decision, resp = "partial", X_RESP_PARTIAL
            record.note = note
        else:
            record.decision, resp = "granted", X_RESP_GRANTED
        return resp

    def _finish(self, chain: Chain, record: RequestRecord, req: XRequest,
                vq: SplitVirtqueue, *, decided: int) -> None:
        written = chain.write(pack_response(decided, record.granted, self._dev.requested_size))
        vq.push(chain, written)
        self._emit(self._event(record))

    def _event(self, record: RequestRecord) -> GuestMemRequest:
        return GuestMemRequest(self._dev.id, record.seq, record.type, record.node_id,
                               record.size, record.reason, record.policy, record.decision,
                               record.granted, self._dev.requested_size)

    # ---------------------------------------------------------------- state

    def save(self) -> dict[str, Any]:
        return {"policy": self.config.to_dict(), "held": self._held is not None}

    def load(self, state: dict[str, Any]) -> bool:
        """Restore the policy; True when a request was held (the transport rewinds the
        queue so it is popped, and asked about, again)."""
        pol = state["policy"]
        self.config = PolicyConfig(Policy(pol["policy"]), int(pol["cap"]), int(pol["rate"]),
                                   float(pol["period"]))
        self._held = None
        return bool(state["held"])
