#!/usr/bin/env python3
"""Floods the connector's HTTP listener (bench/http_flood.sh) and samples its RSS.

  http_flood.py HOST PORT PID OUT [--h2-conns 64] [--h2-streams 200] [--h1-conns 1000]
                [--secs 20] [--settle 3]

For SECS seconds, at once:
  - H2_CONNS clients speak cleartext HTTP/2 with prior knowledge: the connection preface, a
    SETTINGS frame with INITIAL_WINDOW_SIZE 0 (the server may send no body byte), then
    H2_STREAMS streams each asking for /metrics; each reads what comes back and reconnects
    once the server closes the connection;
  - H1_CONNS clients open a connection each, pipeline GET /metrics requests with a 4 KiB receive
    buffer and never read the answers; each reconnects once the server closes it.
Meanwhile a thread samples PID's VmRSS every 100 ms. OUT gets JSON: RSS before, peak during,
and SETTLE seconds after the flood (MiB), the connections each kind of client opened, and the
HTTP/2 responses (HEADERS frames) and bytes received. Needs the `h2` package (PyPI).
"""
import argparse
import asyncio
import json
import resource
import socket
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

H1_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: flood\r\n\r\n"


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, False

    def run(self):
        while not self.stop:
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except OSError:
                return
            time.sleep(0.1)


class Counts:
    def __init__(self):
        self.h2_connections = self.h2_responses = self.h2_bytes = self.h2_refused = 0
        self.h1_connections = self.h1_requests = self.h1_refused = 0


async def h2_client(host, port, streams, end, n):
    cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    while time.monotonic() < end:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            n.h2_refused += 1
            await asyncio.sleep(0.05)
            continue
        n.h2_connections += 1
        conn = h2.connection.H2Connection(config=cfg)
        conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        conn.initiate_connection()
        for i in range(streams):
            conn.send_headers(
                1 + 2 * i,
                [(":method", "GET"), (":path", "/metrics"), (":scheme", "http"),
                 (":authority", f"{host}:{port}")],
                end_stream=True,
            )
        try:
            writer.write(conn.data_to_send())
            await writer.drain()
            while time.monotonic() < end:
                try:
                    data = await asyncio.wait_for(reader.read(65536), 1.0)
                except asyncio.TimeoutError:
                    continue
                if not data:
                    break
                n.h2_bytes += len(data)
                try:
                    events = conn.receive_data(data)
                except Exception:  # not HTTP/2 (an HTTP/1 server's error answer)
                    continue
                n.h2_responses += sum(isinstance(e, h2.events.ResponseReceived) for e in events)
                out = conn.data_to_send()  # SETTINGS and PING acks; never a WINDOW_UPDATE
                if out:
                    writer.write(out)
        except OSError:
            pass
        finally:
            writer.close()
        await asyncio.sleep(0.01)


async def h1_client(host, port, end, n):
    while time.monotonic() < end:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(s, (host, port))
        except OSError:
            s.close()
            n.h1_refused += 1
            await asyncio.sleep(0.05)
            continue
        n.h1_connections += 1
        reader, writer = await asyncio.open_connection(sock=s)
        try:
            # Requests until the server closes the connection; the answers are never read.
            while time.monotonic() < end:
                writer.write(H1_REQUEST * 8)
                n.h1_requests += 8
                await asyncio.wait_for(writer.drain(), 1.0)
                await asyncio.sleep(0.2)
                if writer.is_closing() or reader.at_eof():
                    break
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()
        await asyncio.sleep(0.01)


async def flood(a, n):
    end = time.monotonic() + a.secs
    tasks = [h2_client(a.host, a.port, a.h2_streams, end, n) for _ in range(a.h2_conns)]
    tasks += [h1_client(a.host, a.port, end, n) for _ in range(a.h1_conns)]
    await asyncio.gather(*tasks)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("pid", type=int)
    p.add_argument("out")
    p.add_argument("--h2-conns", type=int, default=64)
    p.add_argument("--h2-streams", type=int, default=200)
    p.add_argument("--h1-conns", type=int, default=1000)
    p.add_argument("--secs", type=float, default=20)
    p.add_argument("--settle", type=float, default=3)
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * (a.h1_conns + a.h2_conns) + 256)), hard))
    before = rss_mib(a.pid)
    sampler = Sampler(a.pid)
    sampler.start()
    n = Counts()
    t0 = time.monotonic()
    asyncio.run(flood(a, n))
    flood_secs = time.monotonic() - t0
    time.sleep(a.settle)
    sampler.stop = True
    sampler.join()
    res = {"rss_before_mib": round(before, 1), "rss_peak_mib": round(sampler.peak, 1),
           "rss_after_mib": round(rss_mib(a.pid), 1), "flood_secs": round(flood_secs, 1),
           "h2_conns": a.h2_conns, "h2_streams": a.h2_streams, "h1_conns": a.h1_conns}
    res.update(vars(n))
    with open(a.out, "w") as f:
        json.dump(res, f)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
