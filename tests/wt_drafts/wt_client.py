#!/usr/bin/env python3
"""A WebTransport client that behaves like a browser implementing one revision of
draft-ietf-webtrans-http3, to check that rtgate's /wt endpoint serves it.

Profiles (docs/webtransport-drafts.md has the table and the draft sections):
  draft02  Chrome/Firefox: SETTINGS_ENABLE_WEBTRANSPORT, :protocol "webtransport".
  draft13  -13/-14, what Safari 26.4+ looks for: SETTINGS_WT_MAX_SESSIONS plus the WT flow-control
           settings, :protocol "webtransport".
  draft16  -15/-16: SETTINGS_WT_ENABLED plus the flow-control settings, :protocol "webtransport-h3".

The client first reads the server's SETTINGS and refuses (exit 3) a server lacking what the profile
requires, as such a browser gives up before sending the CONNECT. Otherwise it opens a session on
/wt, one bidirectional stream, and speaks rtgate's framing on it (u32 big-endian length + UTF-8
JSON, see PROTOCOL.md): `connect` with the token, `connected`, then `sys:echo` and its `ack`.
With --expect-close CODE the token is expected to be refused: the server must then end the session
with a CLOSE_WEBTRANSPORT_SESSION capsule (0x2843) carrying CODE and a reason on the CONNECT stream
(exit 4 if not).

Prints one JSON line on stdout. Exit: 0 ok, 1 failure, 2 usage, 3 server refused, 4 close not as
expected. Run through scripts/wt-draft-check, which installs the pinned aioquic.
"""

import argparse
import asyncio
import json
import ssl
import struct
import sys

import aioquic.quic.connection as quic_connection
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer, BufferReadError, encode_uint_var
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived, StreamReset

# HTTP/3 SETTINGS identifiers (RFC 9114, RFC 9220, RFC 9297, draft-ietf-webtrans-http3).
QPACK_MAX_TABLE_CAPACITY, QPACK_BLOCKED_STREAMS = 0x01, 0x07
ENABLE_CONNECT_PROTOCOL, H3_DATAGRAM = 0x08, 0x33
ENABLE_WEBTRANSPORT_02 = 0x2B603742  # -02..-06, boolean
WEBTRANSPORT_MAX_SESSIONS_07 = 0xC671706A  # -07..-12
WT_MAX_SESSIONS = 0x14E9CD29  # -13/-14
WT_ENABLED = 0x2C7CF000  # -15/-16, boolean
WT_INITIAL_MAX_DATA, WT_INITIAL_MAX_STREAMS_UNI, WT_INITIAL_MAX_STREAMS_BIDI = 0x2B61, 0x2B64, 0x2B65
NAMES = {
    QPACK_MAX_TABLE_CAPACITY: "QPACK_MAX_TABLE_CAPACITY", 0x06: "MAX_FIELD_SECTION_SIZE",
    QPACK_BLOCKED_STREAMS: "QPACK_BLOCKED_STREAMS", ENABLE_CONNECT_PROTOCOL: "ENABLE_CONNECT_PROTOCOL",
    H3_DATAGRAM: "H3_DATAGRAM", ENABLE_WEBTRANSPORT_02: "ENABLE_WEBTRANSPORT",
    WEBTRANSPORT_MAX_SESSIONS_07: "WEBTRANSPORT_MAX_SESSIONS", WT_MAX_SESSIONS: "WT_MAX_SESSIONS",
    WT_ENABLED: "WT_ENABLED", WT_INITIAL_MAX_DATA: "WT_INITIAL_MAX_DATA",
    WT_INITIAL_MAX_STREAMS_UNI: "WT_INITIAL_MAX_STREAMS_UNI",
    WT_INITIAL_MAX_STREAMS_BIDI: "WT_INITIAL_MAX_STREAMS_BIDI",
}

# Capsule types on the CONNECT stream (carried in HTTP/3 DATA frames, RFC 9297 section 3).
CLOSE_SESSION, DRAIN_SESSION = 0x2843, 0x78AE
WT_MAX_DATA, WT_MAX_STREAMS_BIDI = 0x190B4D3D, 0x190B4D3F
WEBTRANSPORT_STREAM = 0x41  # signal opening a client bidirectional WebTransport stream
RESET_STREAM_AT_PARAMS = {0x1D, 0x17F7586D2CB570, 0x17F7586D2CB571}  # -09 id, earlier draft ids

# The data limit this client grants the server when it enables WT flow control. Browsers raise it
# with WT_MAX_DATA as the page reads; this short-lived client never needs to.
CLIENT_MAX_DATA = 1 << 20
FLOW = {WT_INITIAL_MAX_DATA: CLIENT_MAX_DATA, WT_INITIAL_MAX_STREAMS_UNI: 16,
        WT_INITIAL_MAX_STREAMS_BIDI: 16}
BASE = {QPACK_MAX_TABLE_CAPACITY: 0, QPACK_BLOCKED_STREAMS: 0, H3_DATAGRAM: 1}

# For each profile: what the client sends, the :protocol token, and what it requires of the
# server as (setting, predicate, wanted). Values from draft -02 s3.1, -14 s3.1, -16 s3.1.
PROFILES = {
    "draft02": dict(settings={**BASE, ENABLE_WEBTRANSPORT_02: 1}, protocol="webtransport",
                    draft02_header=True, flow_control=False,
                    required=[(ENABLE_WEBTRANSPORT_02, "== 1"), (H3_DATAGRAM, "== 1")]),
    "draft13": dict(settings={**BASE, WT_MAX_SESSIONS: 1, **FLOW}, protocol="webtransport",
                    draft02_header=False, flow_control=True,
                    required=[(WT_MAX_SESSIONS, ">= 1"), (ENABLE_CONNECT_PROTOCOL, "== 1"),
                              (H3_DATAGRAM, "== 1")]),
    "draft16": dict(settings={**BASE, WT_ENABLED: 1, **FLOW}, protocol="webtransport-h3",
                    draft02_header=False, flow_control=True,
                    required=[(WT_ENABLED, "== 1"), (ENABLE_CONNECT_PROTOCOL, "== 1"),
                              (H3_DATAGRAM, "== 1")]),
}
CHECKS = {"== 1": lambda v: v == 1, ">= 1": lambda v: v >= 1}

# aioquic skips transport parameters it does not know, reset_stream_at among them; note the ids
# the server sent before aioquic parses them, to report whether it advertises reliable resets.
SEEN_TRANSPORT_PARAMS: set = set()
_pull_params = quic_connection.pull_quic_transport_parameters


def _pull_params_noting_ids(buf: Buffer):
    start = buf.tell()
    try:
        while not buf.eof():
            SEEN_TRANSPORT_PARAMS.add(buf.pull_uint_var())
            buf.seek(buf.tell() + buf.pull_uint_var())
    except (BufferReadError, ValueError):
        pass
    buf.seek(start)
    return _pull_params(buf)


quic_connection.pull_quic_transport_parameters = _pull_params_noting_ids


def name(setting: int) -> str:
    return f"{NAMES.get(setting, 'unknown')} (0x{setting:x})"


class ProfileH3(H3Connection):
    """aioquic's HTTP/3 connection, sending the profile's SETTINGS instead of its own."""

    def __init__(self, quic, settings: dict):
        self._profile_settings = settings  # read by _init_connection, called by the base class
        super().__init__(quic, enable_webtransport=True)

    def _get_local_settings(self) -> dict:
        return dict(self._profile_settings)


class WtClient(QuicConnectionProtocol):
    def __init__(self, *args, settings: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = ProfileH3(self._quic, settings)
        self.changed = asyncio.Event()
        self.session_id = None  # the CONNECT stream
        self.status = None
        self.response_headers = {}
        self.capsule_buf = b""
        self.capsules = []  # (type, payload) in arrival order
        self.connect_fin = False
        self.wt_stream = None  # the bidirectional stream carrying rtgate's frames
        self.wt_buf = b""
        self.wt_received = 0
        self.wt_fin = False
        self.resets = []
        self.terminated = None

    def quic_event_received(self, event) -> None:
        # The frame stream is raw WebTransport data after its header: handled here, not by H3.
        if isinstance(event, (StreamDataReceived, StreamReset)) and event.stream_id == self.wt_stream:
            if isinstance(event, StreamReset):
                self.resets.append({"stream": event.stream_id, "code": event.error_code})
            else:
                self.wt_buf += event.data
                self.wt_received += len(event.data)
                self.wt_fin |= event.end_stream
        elif isinstance(event, ConnectionTerminated):
            self.terminated = {"error_code": event.error_code, "reason": event.reason_phrase}
        else:
            if isinstance(event, StreamReset):
                self.resets.append({"stream": event.stream_id, "code": event.error_code})
            for h3_event in self.h3.handle_event(event):
                self._h3_event(h3_event)
        self.changed.set()

    def _h3_event(self, event) -> None:
        if getattr(event, "stream_id", None) != self.session_id:
            return
        if isinstance(event, HeadersReceived):
            self.response_headers = {k.decode(): v.decode() for k, v in event.headers}
            self.status = int(self.response_headers.get(":status", "0"))
            self.connect_fin |= event.stream_ended
        elif isinstance(event, DataReceived):
            self.capsule_buf += event.data
            self.connect_fin |= event.stream_ended
            self._parse_capsules()

    def _parse_capsules(self) -> None:
        while True:
            buf = Buffer(data=self.capsule_buf)
            try:
                kind, length = buf.pull_uint_var(), buf.pull_uint_var()
                payload = buf.pull_bytes(length)
            except BufferReadError:
                return  # incomplete: wait for more DATA
            self.capsules.append((kind, payload))
            self.capsule_buf = self.capsule_buf[buf.tell():]

    async def until(self, predicate, timeout: float) -> bool:
        """Waits until predicate() holds, the connection ends, or the time runs out."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if self.terminated is not None:
                return predicate()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                return predicate()
        return True

    def send_frame(self, frame: dict) -> int:
        body = json.dumps(frame, separators=(",", ":")).encode()
        data = struct.pack(">I", len(body)) + body
        self._quic.send_stream_data(self.wt_stream, data)
        self.transmit()
        return len(data)

    def next_frame(self):
        """The next whole frame in the buffer, or None."""
        if len(self.wt_buf) < 4:
            return None
        (length,) = struct.unpack(">I", self.wt_buf[:4])
        if len(self.wt_buf) < 4 + length:
            return None
        body, self.wt_buf = self.wt_buf[4:4 + length], self.wt_buf[4 + length:]
        return json.loads(body.decode("utf-8"))

    def frame_ready(self) -> bool:
        return len(self.wt_buf) >= 4 and len(self.wt_buf) >= 4 + struct.unpack(">I", self.wt_buf[:4])[0]

    async def recv_frame(self, timeout: float):
        """The next frame on the stream, answering pings on the way; None at its end."""
        while True:
            await self.until(lambda: self.frame_ready() or self.wt_fin, timeout)
            frame = self.next_frame()
            if frame is not None and frame.get("type") == "ping":
                self.send_frame({"type": "pong"})
                continue
            return frame


def requirement_failures(profile: dict, server: dict, client: "WtClient") -> list:
    """What a browser of this profile finds missing in the server's SETTINGS (empty: fine)."""
    missing = []
    for setting, check in profile["required"]:
        if setting not in server:
            missing.append(f"{name(setting)} missing, must be {check}")
        elif not CHECKS[check](server[setting]):
            missing.append(f"{name(setting)} is {server[setting]}, must be {check}")
    if profile["settings"].get(H3_DATAGRAM) and not client._quic._remote_max_datagram_frame_size:
        missing.append("transport parameter max_datagram_frame_size missing or 0")
    if profile["flow_control"] and flow_control_on(server):
        # Flow control is on (the client always asks for it): limits left at their default of 0
        # mean this client could open no stream and send no byte (draft-16 s5.1, s5.5).
        for setting in (WT_INITIAL_MAX_STREAMS_BIDI, WT_INITIAL_MAX_DATA):
            if server.get(setting, 0) == 0:
                missing.append(f"{name(setting)} missing or 0 although WT flow control is on")
    return missing


def flow_control_on(server: dict) -> bool:
    """Whether the server declared WT flow control (draft-14 s5.1; -16 s5.1 drops the sessions rule)."""
    return (server.get(WT_MAX_SESSIONS, 0) > 1
            or any(server.get(s, 0) for s in (WT_INITIAL_MAX_DATA, WT_INITIAL_MAX_STREAMS_UNI,
                                                WT_INITIAL_MAX_STREAMS_BIDI)))


async def run(args, out: dict) -> int:
    profile = PROFILES[args.profile]
    host, _, port = args.addr.rpartition(":")
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, verify_mode=ssl.CERT_NONE,
                               max_datagram_frame_size=65536, server_name="localhost")

    def factory(*a, **kw):
        return WtClient(*a, settings=profile["settings"], **kw)

    async with connect(host.strip("[]"), int(port), configuration=config,
                       create_protocol=factory) as client:
        # Draft rule: no WebTransport request before the server's SETTINGS have arrived.
        if not await client.until(lambda: client.h3.received_settings is not None, args.timeout):
            out["error"] = f"no server SETTINGS within {args.timeout}s; closed: {client.terminated}"
            return 1
        server = client.h3.received_settings
        out["server_settings"] = {name(k): v for k, v in sorted(server.items())}
        out["max_datagram_frame_size"] = client._quic._remote_max_datagram_frame_size
        out["reset_stream_at"] = bool(SEEN_TRANSPORT_PARAMS & RESET_STREAM_AT_PARAMS)
        fc = profile["flow_control"] and flow_control_on(server)
        out["wt_flow_control"] = fc
        missing = requirement_failures(profile, server, client)
        if missing and args.ignore_settings:
            out["ignored"] = missing  # diagnosis only: see what the server does next
        elif missing:
            out["refused"] = missing
            print(f"wt_client: {args.profile} refuses the server: {missing[0]}", file=sys.stderr)
            return 3

        # The extended CONNECT (RFC 9220) for the session; browsers always send Origin.
        client.session_id = client._quic.get_next_available_stream_id()
        headers = [(b":method", b"CONNECT"), (b":scheme", b"https"),
                   (b":authority", args.addr.encode()), (b":path", b"/wt"),
                   (b":protocol", profile["protocol"].encode()), (b"origin", args.origin.encode()),
                   (b"user-agent", b"rtgate-wt-draft-check")]
        if profile["draft02_header"]:
            headers.append((b"sec-webtransport-http3-draft02", b"1"))  # as Chrome sent for -02
        client.h3.send_headers(client.session_id, headers, end_stream=False)
        client.transmit()
        await client.until(lambda: client.status is not None, args.timeout)
        out["status"] = client.status
        if client.status is None or not 200 <= client.status < 300:
            out["error"] = "CONNECT not accepted"
            out["resets"], out["connection_close"] = client.resets, client.terminated
            return 1

        # The frame stream: signal 0x41 and the session id, then rtgate's frames (PROTOCOL.md).
        client.wt_stream = client._quic.get_next_available_stream_id()
        client._quic.send_stream_data(client.wt_stream, encode_uint_var(WEBTRANSPORT_STREAM)
                                      + encode_uint_var(client.session_id))
        sent = client.send_frame({"type": "connect", "v": 1, "token": args.token})
        connected = await client.recv_frame(args.timeout)
        out["first_frame"] = connected
        out["connected"] = bool(connected and connected.get("type") == "connected")
        if args.expect_close is not None:
            return await expect_close(client, args, out, connected)
        if not out["connected"]:
            out["error"] = "no `connected` frame"
            return 1
        data = {"text": f"hello over {args.profile}", "n": [1, 2, 3]}
        sent += client.send_frame({"type": "event", "event": "sys:echo", "id": 1, "data": data})
        ack = await client.recv_frame(args.timeout)
        out["echo_ok"] = bool(ack and ack.get("type") == "ack" and ack.get("id") == 1
                              and ack.get("data") == data)
        if fc:
            limit = max([server[WT_INITIAL_MAX_DATA]]
                        + [decode_varint(p) for k, p in client.capsules if k == WT_MAX_DATA])
            out["wt_data_sent"], out["wt_data_limit"] = sent, limit
            if sent > limit or client.wt_received > CLIENT_MAX_DATA:
                out["error"] = "WT session data limit exceeded (WT_FLOW_CONTROL_ERROR)"
                return 1
        client.send_frame({"type": "disconnect"})
        out["capsules"] = [hex(k) for k, _ in client.capsules]
        return 0 if out["echo_ok"] else 1


async def expect_close(client: WtClient, args, out: dict, first) -> int:
    """The token is to be refused: frames, then the close capsule on the CONNECT stream."""
    frames = [first] if first else []
    while frames and frames[-1].get("type") != "disconnect":
        frame = await client.recv_frame(args.timeout)
        if frame is None:
            break
        frames.append(frame)
    out["frames"] = frames
    # The capsule comes with the session's end; the CONNECT stream's FIN follows it.
    # Both may come in separate packets: wait for the pair (or the connection's end).
    await client.until(lambda: any(k == CLOSE_SESSION for k, _ in client.capsules)
                       and client.connect_fin, args.timeout)
    out["capsules"] = [hex(k) for k, _ in client.capsules]
    out["connect_stream_fin"] = client.connect_fin
    out["connection_close"] = client.terminated
    out["resets"] = client.resets
    close = next((p for k, p in client.capsules if k == CLOSE_SESSION), None)
    if close is None or len(close) < 4:
        out["error"] = "no CLOSE_WEBTRANSPORT_SESSION capsule on the CONNECT stream"
        return 4
    code, reason = struct.unpack(">I", close[:4])[0], close[4:].decode("utf-8", "replace")
    out["close_capsule"] = {"code": code, "reason": reason}
    if code != args.expect_close or not reason:
        out["error"] = f"close capsule {code} {reason!r}, expected {args.expect_close} with a reason"
        return 4
    return 0


def decode_varint(payload: bytes) -> int:
    return Buffer(data=payload).pull_uint_var()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="the server's WebTransport HOST:PORT (UDP)")
    parser.add_argument("--profile", required=True, choices=sorted(PROFILES))
    parser.add_argument("--token", required=True, help="the JWT for the `connect` frame")
    parser.add_argument("--expect-close", type=int, metavar="CODE",
                        help="expect the token refused and a close capsule carrying CODE")
    parser.add_argument("--ignore-settings", action="store_true",
                        help="diagnosis: report missing SETTINGS but open the session anyway")
    parser.add_argument("--origin", default="https://localhost", help="the Origin header")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per step")
    args = parser.parse_args()
    out = {"profile": args.profile, "addr": args.addr}
    try:
        status = asyncio.run(run(args, out))
    except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
        out["error"], status = f"{type(exc).__name__}: {exc}", 1
    out["exit"] = status
    print(json.dumps(out, sort_keys=True))
    return status


if __name__ == "__main__":
    sys.exit(main())
