#!/usr/bin/env python3
"""Test-only HTTP shim in front of moto's Glue API (tests/e2e/glue.sh).

AWS Glue's UpdateTable takes a VersionId (the one GetTable gave) and refuses the update with
ConcurrentModificationException when the table has changed since: that is the optimistic lock
an Iceberg commit through Glue relies on (iceberg-catalog-glue 0.10.1 sends the VersionId of
the table it loaded; a refused commit is retried on the refreshed table). moto 5.2.6 returns a
VersionId from GetTable but ignores it in UpdateTable: two writers committing at once both
succeed and the second overwrites the first's metadata_location (a lost snapshot).

The shim forwards every request as it is (method, path, headers, body) to moto and every answer
as moto gave it, except that it serializes UpdateTable calls and, for one carrying a VersionId,
first asks moto for the table's current VersionId (GetTable with the caller's Host,
Authorization and Content-Type: moto reads its account from them) and answers 400
ConcurrentModificationException, in the Glue API's JSON error shape, when they differ, as Glue
does. Each exchange is logged as one line: METHOD path TARGET -> status, and
for a refused update the stale and current versions.

  glue_shim.py PORT UPSTREAM_PORT [MAX_SECS]

Listens on 127.0.0.1:PORT; stops on SIGTERM or after MAX_SECS (a safety net, default 3600).
"""
import http.client
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-authorization", "proxy-authenticate", "content-length"}
UPDATE_LOCK = threading.Lock()
LOG_LOCK = threading.Lock()


def say(line):
    """One whole line on stdout (handler threads print concurrently)."""
    with LOG_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream_port = 0

    def log_message(self, *_args):
        pass

    def _upstream(self, body, headers):
        up = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            up.request(self.command, self.path, body=body, headers=headers)
            resp = up.getresponse()
            return resp.status, resp.reason, resp.getheaders(), resp.read()
        finally:
            up.close()

    def _current_version(self, req, headers):
        """The table's VersionId in moto now (None if moto does not answer one)."""
        # Only what moto reads: where the call goes, its target, the caller (for the account).
        keep = ("host", "authorization", "content-type", "x-amz-date")
        headers = {k: v for k, v in headers.items() if k.lower() in keep}
        headers["X-Amz-Target"] = "AWSGlue.GetTable"
        headers.setdefault("Content-Type", "application/x-amz-json-1.1")
        query = {"DatabaseName": req.get("DatabaseName"), "Name": req["TableInput"]["Name"]}
        if req.get("CatalogId"):
            query["CatalogId"] = req["CatalogId"]
        status, _, _, data = self._upstream(json.dumps(query).encode(), headers)
        if status != 200:
            say(f"GetTable for a VersionId check -> {status} {data[:200]!r}")
            return None
        return json.loads(data).get("Table", {}).get("VersionId")

    def _answer(self, status, reason, rheaders, data):
        self.send_response(status, reason)
        for k, v in rheaders:
            if k.lower() not in HOP and k.lower() not in ("server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        target = self.headers.get("X-Amz-Target", "")
        note = ""
        try:
            if target == "AWSGlue.UpdateTable":
                with UPDATE_LOCK:
                    req = json.loads(body)
                    sent = req.get("VersionId")
                    current = self._current_version(req, headers) if sent is not None else None
                    if sent is not None and current is not None and str(sent) != str(current):
                        msg = json.dumps({"__type": "ConcurrentModificationException",
                                          "Message": f"VersionId {sent} is stale: the table is at {current}"})
                        answer = (400, "Bad Request", [
                            ("Content-Type", "application/x-amz-json-1.1"),
                            ("x-amzn-ErrorType", "ConcurrentModificationException")], msg.encode())
                        note = f" refused: VersionId {sent} stale, current {current}"
                    else:
                        answer = self._upstream(body, headers)
                        note = f" VersionId {sent}" if sent is not None else " no VersionId"
            else:
                answer = self._upstream(body, headers)
        except OSError as e:
            say(f"{self.command} {self.path} {target} -> upstream error {e}")
            self.send_error(502, "upstream error")
            return
        self._answer(*answer)
        say(f"{self.command} {self.path} {target} -> {answer[0]}{note}")

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


def main(argv):
    port, upstream = int(argv[1]), int(argv[2])
    max_secs = float(argv[3]) if len(argv) > 3 else 3600.0
    Handler.upstream_port = upstream
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop.wait(max_secs)
    server.shutdown()


if __name__ == "__main__":
    main(sys.argv)
