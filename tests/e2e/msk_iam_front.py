#!/usr/bin/env python3
"""A Kafka front door that authenticates as Amazon MSK does with IAM, for tests/e2e/msk_iam.sh.

It listens on 127.0.0.1:PORT and speaks just enough of the Kafka protocol to authenticate a
client with SASL/OAUTHBEARER: ApiVersions (the upstream broker's list, plus SaslHandshake and
SaslAuthenticate), SaslHandshake (OAUTHBEARER only) and SaslAuthenticate. The bearer token must
be an MSK IAM token: a base64url SigV4-presigned URL for kafka-cluster:Connect in REGION, signed
with ACCESS_KEY. It is checked against the published signer: the same URL is built by
`aws_msk_iam_sasl_signer` (aws-msk-iam-sasl-signer-python) with the credentials the front knows
and botocore's clock set to the token's X-Amz-Date, and every parameter but User-Agent must be
equal. An accepted connection is then relayed byte for byte to the broker at UPSTREAM_PORT; a
rejected one gets SASL_AUTHENTICATION_FAILED with the reason, and is closed. Any other request
before authentication closes the connection.

    msk_iam_front.py PORT UPSTREAM_PORT REGION ACCESS_KEY SECRET_KEY SESSION_TOKEN SECS

One line per authentication on stdout ("accepted ..." / "rejected: ..."). Exits after SECS.
"""

import asyncio
import base64
import datetime
import struct
import sys
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58


def reference_url(region, access_key, secret_key, token, at):
    """The URL the published Python signer builds for these credentials at time `at`."""
    from botocore.credentials import CredentialProvider, Credentials
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    class Fixed(CredentialProvider):
        def load(self):
            return Credentials(access_key, secret_key, token or None)

    with mock.patch("botocore.auth.get_current_datetime", return_value=at):
        tok, _ = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(region, Fixed())
    return base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)).decode()


def params(url):
    """(scheme://host/path, sorted query parameters without User-Agent)."""
    u = urlsplit(url)
    q = sorted((k, v) for k, v in parse_qsl(u.query, keep_blank_values=True) if k != "User-Agent")
    return f"{u.scheme}://{u.netloc}{u.path}", q


def check_token(auth_bytes, region, access_key, secret_key, session_token):
    """None when the OAUTHBEARER client-first message carries a valid MSK IAM token, else why not."""
    parts = auth_bytes.decode("utf-8", "replace").split("\x01")
    bearer = [p[len("auth=Bearer "):] for p in parts if p.startswith("auth=Bearer ")]
    if not bearer:
        return "no 'auth=Bearer' in the client's first message"
    tok = bearer[0].strip()
    try:
        url = base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)).decode()
    except Exception as e:  # noqa: BLE001 - any decoding failure is a rejection
        return f"token is not base64url: {e}"
    base, q = params(url)
    qd = dict(q)
    if base != f"https://kafka.{region}.amazonaws.com/":
        return f"token is for {base}, not kafka.{region}.amazonaws.com"
    if qd.get("Action") != "kafka-cluster:Connect" or qd.get("X-Amz-Expires") != "900":
        return f"token parameters: Action={qd.get('Action')} X-Amz-Expires={qd.get('X-Amz-Expires')}"
    try:
        at = datetime.datetime.strptime(qd["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    except (KeyError, ValueError):
        return "token has no valid X-Amz-Date"
    age = abs((datetime.datetime.utcnow() - at).total_seconds())
    if age > 300:
        return f"token signed {age:.0f} s away from now"
    if params(reference_url(region, access_key, secret_key, session_token, at)) != (base, q):
        return "signature does not match the published signer's for the known credentials"
    if "User-Agent" not in url:
        return "token has no User-Agent"
    return None


def frame(correlation_id, body):
    payload = struct.pack(">i", correlation_id) + body
    return struct.pack(">i", len(payload)) + payload


def kstring(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def api_versions_body(version, apis):
    """ApiVersions response body in `version` (0-2 plain, 3+ flexible)."""
    if version >= 3:
        body = struct.pack(">h", 0) + uvarint(len(apis) + 1)
        for key, lo, hi in apis:
            body += struct.pack(">hhh", key, lo, hi) + uvarint(0)
        return body + struct.pack(">i", 0) + uvarint(0)
    body = struct.pack(">hi", 0, len(apis))
    for key, lo, hi in apis:
        body += struct.pack(">hhh", key, lo, hi)
    return body + (struct.pack(">i", 0) if version >= 1 else b"")


async def read_frame(reader):
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    return await reader.readexactly(size)


async def upstream_apis(port):
    """The broker's own ApiVersions (v0), with SASL's two APIs added."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    req = struct.pack(">hhi", API_VERSIONS, 0, 1) + kstring("msk-iam-front")
    w.write(struct.pack(">i", len(req)) + req)
    await w.drain()
    resp = await read_frame(r)
    w.close()
    err, n = struct.unpack(">hi", resp[4:10])
    if err:
        raise SystemExit(f"upstream ApiVersions error {err}")
    apis = {}
    for i in range(n):
        key, lo, hi = struct.unpack(">hhh", resp[10 + 6 * i:16 + 6 * i])
        apis[key] = (key, lo, hi)
    apis[SASL_HANDSHAKE] = (SASL_HANDSHAKE, 0, 1)
    apis[SASL_AUTHENTICATE] = (SASL_AUTHENTICATE, 0, 1)
    return sorted(apis.values())


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def main(argv):
    port, upstream, region, access_key, secret_key, session_token, secs = argv
    port, upstream, secs = int(port), int(upstream), float(secs)

    async def serve():
        apis = await upstream_apis(upstream)

        async def handle(reader, writer):
            try:
                while True:
                    req = await read_frame(reader)
                    key, version, cid = struct.unpack(">hhi", req[:8])
                    if key == API_VERSIONS:
                        writer.write(frame(cid, api_versions_body(version, apis)))
                    elif key == SASL_HANDSHAKE:
                        hlen = struct.unpack(">h", req[8:10])[0]
                        body = req[10 + max(hlen, 0):]
                        mlen = struct.unpack(">h", body[:2])[0]
                        mech = body[2:2 + mlen].decode()
                        err = 0 if mech == "OAUTHBEARER" else UNSUPPORTED_SASL_MECHANISM
                        writer.write(frame(cid, struct.pack(">hi", err, 1) + kstring("OAUTHBEARER")))
                        if err:
                            print(f"rejected: mechanism {mech}", flush=True)
                            break
                    elif key == SASL_AUTHENTICATE:
                        hlen = struct.unpack(">h", req[8:10])[0]
                        body = req[10 + max(hlen, 0):]
                        alen = struct.unpack(">i", body[:4])[0]
                        why = check_token(body[4:4 + alen], region, access_key, secret_key, session_token)
                        tail = struct.pack(">q", 0) if version >= 1 else b""
                        if why:
                            print(f"rejected: {why}", flush=True)
                            msg = kstring(f"MSK IAM token rejected: {why}")
                            writer.write(frame(cid, struct.pack(">h", SASL_AUTHENTICATION_FAILED) + msg + struct.pack(">i", 0) + tail))
                            await writer.drain()
                            break
                        print("accepted an MSK IAM token", flush=True)
                        writer.write(frame(cid, struct.pack(">hhi", 0, -1, 0) + tail))
                        await writer.drain()
                        ur, uw = await asyncio.open_connection("127.0.0.1", upstream)
                        await asyncio.gather(pipe(reader, uw), pipe(ur, writer))
                        return
                    else:
                        print(f"rejected: api {key} before authentication", flush=True)
                        break
                    await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await asyncio.sleep(secs)

    asyncio.run(serve())


if __name__ == "__main__":
    main(sys.argv[1:])
