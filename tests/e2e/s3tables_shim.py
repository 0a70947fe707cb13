#!/usr/bin/env python3
"""Test-only HTTP shim in front of moto's S3 Tables control plane (tests/e2e/s3tables.sh).

moto (5.2.5, 5.2.6) answers two S3 Tables operations with shapes that differ from the service's
API model, and aws-sdk-s3tables (the Rust SDK under iceberg-catalog-s3tables) refuses them:

  GetTable                     "managedByService": false  -- the model's member is a string (the
                               managing service's name), absent for a table the caller manages;
                               the SDK's deserializer wants a string: a boolean is dropped when
                               false, else written as a string
  UpdateTableMetadataLocation  "tableArn": ..., "namespace": "ns"  -- the model's members are
                               "tableARN" (required) and "namespace" (a list of strings)

The shim forwards every request as it is (method, path, query, headers, body) to moto and
rewrites only those members of those two answers; every other byte is moto's. Each exchange is
logged as one line: METHOD path -> status, and the members rewritten, if any.

  s3tables_shim.py PORT UPSTREAM_PORT [MAX_SECS]

Listens on 127.0.0.1:PORT; stops on SIGTERM or after MAX_SECS (a safety net, default 3600).
"""
import http.client
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-authorization", "proxy-authenticate", "content-length"}


def rewrite(method, path, body):
    """(new body, [what was rewritten]) for moto's answer BODY to METHOD PATH."""
    route = urlsplit(path).path
    if method == "GET" and route == "/get-table":
        fix = get_table
    elif method == "PUT" and route.startswith("/tables/") and route.endswith("/metadata-location"):
        fix = update_metadata_location
    else:
        return body, []
    try:
        doc = json.loads(body)
    except ValueError:
        return body, []
    if not isinstance(doc, dict):
        return body, []
    done = fix(doc)
    return (json.dumps(doc).encode(), done) if done else (body, [])


def get_table(doc):
    v = doc.get("managedByService")
    if isinstance(v, bool):
        if v:
            doc["managedByService"] = "true"
        else:
            del doc["managedByService"]
        return [f"managedByService {json.dumps(v)}"]
    return []


def update_metadata_location(doc):
    done = []
    if "tableArn" in doc and "tableARN" not in doc:
        doc["tableARN"] = doc.pop("tableArn")
        done.append("tableArn->tableARN")
    if isinstance(doc.get("namespace"), str):
        doc["namespace"] = [doc["namespace"]]
        done.append("namespace string->list")
    return done


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

    def _forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        up = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            up.request(self.command, self.path, body=body, headers=headers)
            resp = up.getresponse()
            data = resp.read()
            status, reason, rheaders = resp.status, resp.reason, resp.getheaders()
        except OSError as e:
            say(f"{self.command} {self.path} -> upstream error {e}")
            self.send_error(502, "upstream error")
            return
        finally:
            up.close()
        done = []
        if 200 <= status < 300:
            data, done = rewrite(self.command, self.path, data)
        self.send_response(status, reason)
        for k, v in rheaders:
            if k.lower() not in HOP and k.lower() not in ("server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        note = f" rewrote: {', '.join(done)}" if done else ""
        say(f"{self.command} {self.path} -> {status}{note}")

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
