"""A test-only Iceberg REST catalog: the REST spec's catalog endpoints served over pyiceberg's
SqlCatalog (sqlite), for tests/e2e/rest.sh. No Java REST catalog can be installed here; this
serves the protocol's shapes with pyiceberg's own request and response models, and two real
clients prove it speaks the protocol: the connector (iceberg-catalog-rest) writes through it and
pyiceberg's RestCatalog reads through it.

Served: GET /v1/config; namespaces (list, create, load, exists); tables (list, create, load,
exists, commit). A commit whose requirements no longer hold answers 409
(CommitFailedException), as the spec says, so the client retries on the refreshed table. An
optional bearer token is required on every request when given (the connector sends it as a
secret). Every request is logged as one line on stderr.

    python rest_catalog.py PORT_FILE SQLITE_PATH WAREHOUSE S3_ENDPOINT [TOKEN]

writes the port it listens on (127.0.0.1, picked by the system) to PORT_FILE.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

from pyiceberg.catalog.rest import CommitTableRequest, CreateTableRequest, TableResponse
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchNamespaceError,
    NoSuchTableError,
    TableAlreadyExistsError,
)

UNIT = "\x1f"


def main(argv):
    port_file, db, warehouse, s3 = argv[1:5]
    token = argv[5] if len(argv) > 5 else None
    catalog = SqlCatalog(
        "rest",
        uri=f"sqlite:///{db}",
        warehouse=warehouse,
        **{
            "s3.endpoint": s3,
            "s3.access-key-id": "testing",
            "s3.secret-access-key": "testing",
            "s3.region": "us-east-1",
            "s3.path-style-access": "true",
        },
    )
    lock = threading.Lock()  # one commit at a time: sqlite, and the requirement check

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # one line per request on stderr
            sys.stderr.write("rest: " + (fmt % args) + "\n")

        def answer(self, code, body=None):
            data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def error(self, code, kind, message):
            self.answer(code, {"error": {"message": message, "type": kind, "code": code}})

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def route(self):
            if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                return self.error(401, "NotAuthorizedException", "a bearer token is required")
            path = urlparse(self.path).path
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if parts[:1] != ["v1"]:
                return self.error(404, "NoSuchEndpoint", path)
            parts = parts[1:]
            if parts == ["config"]:
                return self.answer(200, {"defaults": {}, "overrides": {}})
            if parts[:1] != ["namespaces"]:
                return self.error(404, "NoSuchEndpoint", path)
            if len(parts) == 1:
                if self.command == "GET":
                    return self.answer(200, {"namespaces": [list(n) for n in catalog.list_namespaces()]})
                req = json.loads(self.body())
                try:
                    catalog.create_namespace(tuple(req["namespace"]), req.get("properties") or {})
                except NamespaceAlreadyExistsError as e:
                    return self.error(409, "AlreadyExistsException", str(e))
                return self.answer(200, {"namespace": req["namespace"], "properties": req.get("properties") or {}})
            ns = tuple(parts[1].split(UNIT))
            if len(parts) == 2:
                try:
                    props = catalog.load_namespace_properties(ns)
                except NoSuchNamespaceError as e:
                    return self.error(404, "NoSuchNamespaceException", str(e))
                return self.answer(204 if self.command == "HEAD" else 200,
                                   None if self.command == "HEAD" else {"namespace": list(ns), "properties": props})
            if parts[2] != "tables":
                return self.error(404, "NoSuchEndpoint", path)
            if len(parts) == 3:
                if self.command == "GET":
                    ids = [{"namespace": list(t[:-1]), "name": t[-1]} for t in catalog.list_tables(ns)]
                    return self.answer(200, {"identifiers": ids})
                raw = json.loads(self.body())
                # Optional in the spec, required by pyiceberg's model: no location (the
                # catalog picks it under the warehouse) and an unbound partition spec (field
                # ids assigned here, from 1000 as Iceberg does).
                raw.setdefault("location", None)
                spec = raw.get("partition-spec") or {}
                for i, f in enumerate(spec.get("fields", [])):
                    f.setdefault("field-id", 1000 + i)
                req = CreateTableRequest.model_validate(raw)
                try:
                    with lock:
                        t = catalog.create_table(
                            ns + (req.name,),
                            schema=req.table_schema,
                            location=req.location,
                            partition_spec=req.partition_spec,
                            sort_order=req.write_order,
                            properties=req.properties,
                        )
                except TableAlreadyExistsError as e:
                    return self.error(409, "AlreadyExistsException", str(e))
                except NoSuchNamespaceError as e:
                    return self.error(404, "NoSuchNamespaceException", str(e))
                return self.table(t)
            ident = ns + (parts[3],)
            if self.command in ("GET", "HEAD"):
                try:
                    t = catalog.load_table(ident)
                except NoSuchTableError as e:
                    return self.error(404, "NoSuchTableException", str(e))
                return self.answer(204, None) if self.command == "HEAD" else self.table(t)
            raw = json.loads(self.body())
            raw.setdefault("identifier", {"namespace": list(ns), "name": parts[3]})
            req = CommitTableRequest.model_validate(raw)
            try:
                with lock:
                    t = catalog.load_table(ident)
                    res = catalog.commit_table(t, req.requirements, req.updates)
            except NoSuchTableError as e:
                return self.error(404, "NoSuchTableException", str(e))
            except CommitFailedException as e:
                return self.error(409, "CommitFailedException", str(e))
            body = {"metadata-location": res.metadata_location,
                    "metadata": json.loads(res.metadata.model_dump_json(by_alias=True, exclude_none=True))}
            return self.answer(200, body)

        def table(self, t):
            r = TableResponse(**{"metadata-location": t.metadata_location, "metadata": t.metadata, "config": {}})
            return self.answer(200, r.model_dump_json(by_alias=True, exclude_none=True).encode())

        def do_GET(self):
            self.route()

        def do_HEAD(self):
            self.route()

        def do_POST(self):
            self.route()

        def do_DELETE(self):
            self.error(405, "BadRequestException", "this test catalog deletes nothing")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file, "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
