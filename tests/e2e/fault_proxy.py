#!/usr/bin/env python3
"""Fault-injecting HTTP/1.1 reverse proxy for an S3 server (stdlib asyncio only).

It listens on 127.0.0.1:--port in front of an S3 server (--upstream HOST:PORT, e.g. moto_server)
and forwards every request byte for byte: request line, every header (Host included, so a
SigV4 signature made for the proxy's host:port stays as the client signed it), the body framed
by Content-Length or `Transfer-Encoding: chunked` (aws-chunked bodies are Content-Length framed
and pass through unchanged), keep-alive on both sides. One change: an `Expect: 100-continue`
header is answered by the proxy itself and not forwarded.

With probability --error-rate a request gets one fault instead, its kind drawn by --weights:
  error500     answer 500 InternalError (S3 XML error body); nothing forwarded
  error503     answer 503 SlowDown (S3 XML error body); nothing forwarded
  slow         forward, then hold the answer --slow-ms before sending it
  timeout      read the request, answer nothing for --hold-secs (longer than the client's request
               timeout), then close; nothing forwarded
  drop_before  read the request, reset the connection; nothing forwarded
  drop_after   forward, read the server's whole answer (the server APPLIED the request), then
               reset the connection: the client never sees the answer and retries a request
               that already took effect (PutObject, CompleteMultipartUpload, ...)
Outage windows (every request and every new connection is reset) start at run time.

Control endpoint on 127.0.0.1:--control-port (HTTP/1.1, one request per connection):
  GET  /healthz                   "ok"
  GET  /stats                     JSON: requests, forwarded, answered, injected {kind: n} (outage
                                  counts connections/requests reset during an outage),
                                  injected_total, upstream_errors, error_rate, outage_remaining_s,
                                  by_method {METHOD: n}
  POST /rate?error=R[&slow_ms=N][&hold_secs=S][&match=REGEX][&weights=SPEC]
                                  change the fault rate (delays, target, kinds) now
  POST /outage?secs=S             every request fails for the next S seconds (0 ends it)

Deterministic with --seed: the n-th request that reaches the decision gets the same fate in
every run (which request is n-th depends on the client's timing). Bounded: every read and wait
has a deadline (--idle-secs for a keep-alive connection waiting for its next request,
--io-secs for a request body or an upstream answer, --hold-secs for a timeout fault), and
--max-lifetime-secs stops the proxy as a safety net.

Usage:
  fault_proxy.py --port 9100 --control-port 9101 --upstream 127.0.0.1:9000 --seed 7 \
      --error-rate 0.2 [--weights error500=2,error503=2,slow=2,timeout=1,drop_before=1,drop_after=2]
"""
import argparse
import asyncio
import email.utils
import json
import random
import re
import signal
import socket
import struct
import sys
import time
import urllib.parse

KINDS = ("error500", "error503", "slow", "timeout", "drop_before", "drop_after")
DEFAULT_WEIGHTS = "error500=2,error503=2,slow=2,timeout=1,drop_before=1,drop_after=2"
HEAD_LIMIT = 1 << 20

ERRORS = {
    "error500": (500, "Internal Server Error", "InternalError",
                 "We encountered an internal error. Please try again."),
    "error503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}


class Closed(Exception):
    """The peer closed the connection (or sent garbage) where a message was expected."""


class State:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.error_rate = args.error_rate
        self.slow_ms = args.slow_ms
        self.hold_secs = args.hold_secs
        self.weights = parse_weights(args.weights)
        self.match = re.compile(args.match)
        self.outage_until = 0.0
        self.requests = 0
        self.forwarded = 0
        self.answered = 0
        self.upstream_errors = 0
        self.injected = {k: 0 for k in KINDS + ("outage",)}
        self.by_method = {}
        self.seq = 0

    def in_outage(self):
        return time.monotonic() < self.outage_until

    def decide(self, what):
        """The fault for the next request ("METHOD target"), or None (forward it). Two draws per
        request whatever the outcome, so --match does not shift the sequence."""
        r = self.rng.random()
        k = self.rng.random()
        if r >= self.error_rate or not self.match.search(what):
            return None
        total = sum(self.weights.values())
        acc = 0.0
        for kind in KINDS:
            acc += self.weights.get(kind, 0) / total
            if k < acc:
                return kind
        return KINDS[-1]

    def stats(self):
        return {
            "requests": self.requests,
            "forwarded": self.forwarded,
            "answered": self.answered,
            "injected": dict(self.injected),
            "injected_total": sum(self.injected.values()),
            "upstream_errors": self.upstream_errors,
            "error_rate": self.error_rate,
            "slow_ms": self.slow_ms,
            "hold_secs": self.hold_secs,
            "match": self.match.pattern,
            "weights": self.weights,
            "outage_remaining_s": round(max(0.0, self.outage_until - time.monotonic()), 3),
            "by_method": dict(sorted(self.by_method.items())),
        }


def parse_weights(spec):
    w = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, _, val = part.partition("=")
        name = name.strip()
        if name not in KINDS:
            raise SystemExit(f"fault_proxy: unknown fault kind {name!r} in --weights; use {KINDS}")
        w[name] = float(val)
    if sum(w.values()) <= 0:
        raise SystemExit("fault_proxy: --weights must have a positive total")
    return w


def log(msg):
    print(f"fault_proxy {time.strftime('%H:%M:%S')}: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ HTTP/1.1 message framing
class Head:
    """A request or response head: its raw bytes and the parsed first line and headers."""

    def __init__(self, raw):
        self.raw = raw
        lines = raw[:-4].split(b"\r\n")
        self.first = lines[0].decode("latin-1")
        self.headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise Closed(f"bad header line {line[:80]!r}")
            self.headers.append((name.decode("latin-1").strip().lower(),
                                 value.decode("latin-1").strip()))

    def get(self, name):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def tokens(self, name):
        return {t.strip().lower() for n, v in self.headers if n == name for t in v.split(",")}

    def without(self, name):
        """The raw head with every `name` header line removed."""
        lines = self.raw[:-4].split(b"\r\n")
        keep = [lines[0]] + [l for l in lines[1:]
                             if l.partition(b":")[0].decode("latin-1").strip().lower() != name]
        return b"\r\n".join(keep) + b"\r\n\r\n"


async def read_head(reader, secs):
    """Reads a message head; None on a clean EOF before its first byte."""
    try:
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), secs)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise Closed("connection closed inside a message head")
    except asyncio.LimitOverrunError:
        raise Closed("message head too large")
    return Head(raw)


async def read_body(reader, head, secs, is_response=False, request_method=None):
    """Reads a message body exactly as framed and returns its raw bytes (chunk framing kept)
    and whether the body ended at EOF (then the connection cannot be reused)."""
    if is_response:
        status = int(head.first.split(" ", 2)[1])
        if request_method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return b"", False
    if "chunked" in head.tokens("transfer-encoding"):
        out = bytearray()
        deadline = time.monotonic() + secs
        while True:
            line = await asyncio.wait_for(reader.readuntil(b"\r\n"), left(deadline))
            out += line
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    t = await asyncio.wait_for(reader.readuntil(b"\r\n"), left(deadline))
                    out += t
                    if t == b"\r\n":
                        return bytes(out), False
            out += await asyncio.wait_for(reader.readexactly(size + 2), left(deadline))
    length = head.get("content-length")
    if length is not None:
        n = int(length)
        return (await asyncio.wait_for(reader.readexactly(n), secs) if n else b""), False
    if is_response:  # no framing: the body runs to EOF
        return await asyncio.wait_for(reader.read(), secs), True
    return b"", False


def left(deadline):
    return max(0.001, deadline - time.monotonic())


def keep_alive(head):
    conn = head.tokens("connection")
    if head.first.upper().startswith("HTTP/1.0") or head.first.upper().endswith("HTTP/1.0"):
        return "keep-alive" in conn
    return "close" not in conn


def reset(writer):
    """Closes with a TCP RST (SO_LINGER 0), as a crashed or unplugged server would."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


def error_answer(kind, method, seq):
    status, reason, code, message = ERRORS[kind]
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>FAULT{seq:012d}</RequestId>"
            f"<HostId>fault-proxy</HostId></Error>").encode()
    if method == "HEAD":
        body = b""
    head = (f"HTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-amz-request-id: FAULT{seq:012d}\r\n"
            f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
            f"Server: fault-proxy\r\n\r\n").encode()
    return head + body


# ------------------------------------------------------------------ the proxy
class Upstream:
    """One keep-alive connection to the S3 server per client connection, opened lazily."""

    def __init__(self, host, port, secs):
        self.host, self.port, self.secs = host, port, secs
        self.reader = self.writer = None

    async def exchange(self, head_raw, body, method):
        """Sends one request and returns (response head, body, reusable)."""
        for attempt in (1, 2):
            fresh = self.writer is None
            if fresh:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, limit=HEAD_LIMIT), self.secs)
            try:
                self.writer.write(head_raw)
                self.writer.write(body)
                await asyncio.wait_for(self.writer.drain(), self.secs)
                while True:
                    rhead = await read_head(self.reader, self.secs)
                    if rhead is None:
                        raise Closed("upstream closed before answering")
                    status = int(rhead.first.split(" ", 2)[1])
                    if 100 <= status < 200 and status != 101:
                        continue  # an interim answer the proxy does not relay
                    break
                rbody, to_eof = await read_body(self.reader, rhead, self.secs, True, method)
                reusable = not to_eof and keep_alive(rhead)
                if not reusable:
                    self.close()
                return rhead, rbody, reusable
            except (Closed, ConnectionError, asyncio.IncompleteReadError) as e:
                # A kept-alive upstream connection the server closed meanwhile: retry once on a
                # fresh one (the server never saw the request on a connection it had closed).
                self.close()
                if fresh or attempt == 2:
                    raise Closed(f"upstream: {e}")
        raise Closed("upstream: unreachable")

    def close(self):
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


async def serve_client(state, reader, writer):
    a = state.args
    up = Upstream(a.upstream_host, a.upstream_port, a.io_secs)
    try:
        if state.in_outage():
            state.injected["outage"] += 1
            reset(writer)
            return
        while True:
            head = await read_head(reader, a.idle_secs)
            if head is None:
                return
            parts = head.first.split(" ")
            if len(parts) != 3:
                raise Closed(f"bad request line {head.first[:80]!r}")
            method, target = parts[0], parts[1]
            state.requests += 1
            state.seq += 1
            seq = state.seq
            state.by_method[method] = state.by_method.get(method, 0) + 1
            head_raw = head.raw
            if "100-continue" in head.tokens("expect"):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                head_raw = head.without("expect")
            body, _ = await read_body(reader, head, a.io_secs)
            client_keeps = keep_alive(head)
            if state.in_outage():
                state.injected["outage"] += 1
                reset(writer)
                return
            fault = state.decide(f"{method} {target}")
            what = f"{method} {target[:120]}"
            if fault is not None:
                state.injected[fault] += 1
                if a.verbose:
                    log(f"#{seq} {fault}: {what}")
            if fault in ERRORS:
                writer.write(error_answer(fault, method, seq))
                await asyncio.wait_for(writer.drain(), a.io_secs)
                if not client_keeps:
                    return
                continue
            if fault == "drop_before":
                reset(writer)
                return
            if fault == "timeout":
                try:  # until the client gives up (EOF) or the hold ends
                    await asyncio.wait_for(reader.read(1), state.hold_secs)
                except (asyncio.TimeoutError, ConnectionError):
                    pass
                reset(writer)
                return
            try:
                state.forwarded += 1
                rhead, rbody, reusable = await up.exchange(head_raw, body, method)
            except (Closed, OSError, asyncio.TimeoutError) as e:
                state.upstream_errors += 1
                log(f"#{seq} upstream error on {what}: {e!r}")
                reset(writer)
                return
            if fault == "drop_after":
                reset(writer)
                return
            if fault == "slow":
                await asyncio.sleep(state.slow_ms / 1000.0)
            writer.write(rhead.raw)
            writer.write(rbody)
            await asyncio.wait_for(writer.drain(), a.io_secs)
            state.answered += 1
            if not (client_keeps and reusable):
                return
    except (Closed, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        up.close()
        if not writer.transport.is_closing():
            writer.transport.close()


# ------------------------------------------------------------------ control endpoint
async def serve_control(state, reader, writer):
    try:
        head = await read_head(reader, 10)
        if head is None:
            return
        await read_body(reader, head, 10)
        method, target = head.first.split(" ")[:2]
        url = urllib.parse.urlsplit(target)
        q = dict(urllib.parse.parse_qsl(url.query))
        status, out = 200, None
        if method == "GET" and url.path == "/healthz":
            out = "ok"
        elif method == "GET" and url.path == "/stats":
            out = state.stats()
        elif method == "POST" and url.path == "/rate":
            if "error" in q:
                state.error_rate = min(1.0, max(0.0, float(q["error"])))
            if "slow_ms" in q:
                state.slow_ms = max(0, int(q["slow_ms"]))
            if "hold_secs" in q:
                state.hold_secs = max(0.0, float(q["hold_secs"]))
            if "match" in q:
                state.match = re.compile(q["match"])
            if "weights" in q:
                state.weights = parse_weights(q["weights"])
            log(f"error rate {state.error_rate}, slow {state.slow_ms} ms, hold {state.hold_secs} s, "
                f"match {state.match.pattern!r}, weights {state.weights}")
            out = state.stats()
        elif method == "POST" and url.path == "/outage":
            secs = max(0.0, float(q.get("secs", "0")))
            state.outage_until = time.monotonic() + secs
            log(f"outage for {secs:g} s" if secs else "outage ended")
            out = state.stats()
        else:
            status, out = 404, {"error": f"no route {method} {url.path}"}
        body = (out if isinstance(out, str) else json.dumps(out)).encode() + b"\n"
        ctype = "text/plain" if isinstance(out, str) else "application/json"
        writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Found'}\r\n"
                     f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
        await asyncio.wait_for(writer.drain(), 10)
    except (Closed, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError, ValueError) as e:
        log(f"control: {e!r}")
    finally:
        writer.close()


async def main_async(args):
    state = State(args)
    proxy = await asyncio.start_server(lambda r, w: serve_client(state, r, w),
                                       "127.0.0.1", args.port, limit=HEAD_LIMIT,
                                       reuse_address=True)
    control = await asyncio.start_server(lambda r, w: serve_control(state, r, w),
                                         "127.0.0.1", args.control_port, reuse_address=True)
    log(f"proxy 127.0.0.1:{args.port} -> {args.upstream}, control 127.0.0.1:{args.control_port}, "
        f"seed {args.seed}, error rate {args.error_rate}, weights {state.weights}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.max_lifetime_secs > 0:
            await asyncio.wait_for(stop.wait(), args.max_lifetime_secs)
        else:
            await stop.wait()
    except asyncio.TimeoutError:
        log(f"--max-lifetime-secs {args.max_lifetime_secs} reached; stopping")
    proxy.close()
    control.close()
    log(f"stats {json.dumps(state.stats())}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True, help="proxy port on 127.0.0.1")
    ap.add_argument("--control-port", type=int, required=True, help="control port on 127.0.0.1")
    ap.add_argument("--upstream", required=True, help="S3 server HOST:PORT")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--error-rate", type=float, default=0.0,
                    help="probability that a request gets a fault (0-1)")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS,
                    help=f"relative frequency of each fault kind (default {DEFAULT_WEIGHTS})")
    ap.add_argument("--match", default="",
                    help="only requests whose 'METHOD target' matches this regex get faults "
                         "(default: all), e.g. '^POST .*uploadId=' for CompleteMultipartUpload")
    ap.add_argument("--slow-ms", type=int, default=1500, help="delay of a slow answer")
    ap.add_argument("--hold-secs", type=float, default=8.0,
                    help="how long a timeout fault holds the connection silent")
    ap.add_argument("--idle-secs", type=float, default=300.0,
                    help="keep-alive connection idle limit")
    ap.add_argument("--io-secs", type=float, default=60.0,
                    help="deadline of a request body read and of an upstream answer")
    ap.add_argument("--max-lifetime-secs", type=float, default=0.0,
                    help="stop after this long (0: run until SIGTERM)")
    ap.add_argument("--verbose", action="store_true", help="log every injected fault")
    args = ap.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    args.upstream_host, args.upstream_port = host or "127.0.0.1", int(port)
    parse_weights(args.weights)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
