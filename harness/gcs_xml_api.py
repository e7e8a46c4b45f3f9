"""The slice of Google Cloud Storage's XML API that delta-rs (Rust's ``object_store``) writes with, in front
of fake-gcs-server, which serves the JSON API and XML reads and lists but not XML writes
(fsouza/fake-gcs-server#331; object_store's own tests run a patched fork, PR #1164).

Translated here, one request to one request, with fake-gcs-server doing the work (including the
``ifGenerationMatch`` precondition that makes a Delta commit exclusive):

- ``PUT /<bucket>/<object>`` (``x-goog-if-generation-match`` honoured) → a JSON multipart upload;
- ``DELETE /<bucket>/<object>`` → the JSON delete;
- ``GET /<bucket>?list-type=2&start-after=K`` → fake-gcs-server's list (which ignores ``start-after``)
  with the keys up to K dropped: delta-rs lists a table's log after the version it holds.

Everything else (the JSON API gcsfs uses, XML reads and lists) passes through unchanged. XML multipart
uploads and copies are answered 501, so a client that needs them fails loudly instead of silently.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.etree import ElementTree

import httpx

JSON_PREFIXES = ("/storage/", "/upload/", "/download/", "/batch/", "/_internal/")
BOUNDARY = "xml-api-boundary"


def _xml_error(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()


def _drop_keys_up_to(listing: bytes, start_after: str) -> bytes:
    """A ListBucketResult without the objects whose key sorts at or before ``start_after``."""
    root = ElementTree.fromstring(listing)
    namespace = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    kept = 0
    for item in root.findall(f"{namespace}Contents"):
        key = item.findtext(f"{namespace}Key") or ""
        if key <= start_after:
            root.remove(item)
        else:
            kept += 1
    count = root.find(f"{namespace}KeyCount")
    if count is not None:
        count.text = str(kept)
    return b'<?xml version="1.0" encoding="UTF-8"?>' + ElementTree.tostring(root)


class XmlApiFront:
    """An HTTP server on ``port`` forwarding to fake-gcs-server at ``backend`` (see the module doc)."""

    def __init__(self, port: int, backend: str) -> None:
        self.backend = backend.rstrip("/")
        self.client = httpx.Client(base_url=self.backend, timeout=120)
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # the emulator's own log is enough
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if not any(k.lower() == "content-length" for k in (headers or {})):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _object(self) -> tuple[str, str] | None:
                split = urlsplit(self.path)
                if split.path.startswith(JSON_PREFIXES) or split.path.count("/") < 2:
                    return None
                bucket, _, name = split.path.lstrip("/").partition("/")
                return (bucket, unquote(name)) if name else None

            def _forward(self) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = front.client.request(self.command, self.path, content=self._body(), headers=headers)
                dropped = ("transfer-encoding", "connection", "content-encoding",
                           *(() if self.command == "HEAD" else ("content-length",)))  # HEAD: the object's size
                passed = {k: v for k, v in answer.headers.items() if k.lower() not in dropped}
                self._reply(answer.status_code, answer.content, passed)

            def do_PUT(self) -> None:
                target = self._object()
                if target is None or "upload_id" in self.path:
                    return self._forward()
                if "x-goog-copy-source" in self.headers or "uploadId" in self.path:
                    return self._reply(501, _xml_error("NotImplemented", "copies and XML multipart uploads"))
                bucket, name = target
                body = self._body()
                params = {"uploadType": "multipart"}
                if (match := self.headers.get("x-goog-if-generation-match")) is not None:
                    params["ifGenerationMatch"] = match
                payload = (f"--{BOUNDARY}\r\nContent-Type: application/json\r\n\r\n{json.dumps({'name': name})}\r\n"
                           f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
                payload += body + f"\r\n--{BOUNDARY}--\r\n".encode()
                answer = front.client.post(f"/upload/storage/v1/b/{quote(bucket)}/o", params=params, content=payload,
                                           headers={"Content-Type": f"multipart/related; boundary={BOUNDARY}"})
                if answer.status_code == 412:
                    return self._reply(412, _xml_error("PreconditionFailed", "At least one of the pre-conditions "
                                                       "you specified did not hold."))
                if answer.status_code >= 400:
                    return self._reply(answer.status_code, _xml_error("InternalError", answer.text[:300]))
                created = answer.json()
                self._reply(200, b"", {"ETag": f'"{created.get("etag", created.get("md5Hash", ""))}"',
                                       "x-goog-generation": str(created.get("generation", ""))})

            def do_DELETE(self) -> None:
                target = self._object()
                if target is None:
                    return self._forward()
                bucket, name = target
                answer = front.client.delete(f"/storage/v1/b/{quote(bucket)}/o/{quote(name, safe='')}")
                self._reply(204 if answer.status_code < 300 else answer.status_code)

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                start_after = parse_qs(split.query).get("start-after", [""])[0]
                if not start_after or split.path.strip("/").count("/"):
                    return self._forward()
                answer = front.client.get(self.path)
                self._reply(answer.status_code, _drop_keys_up_to(answer.content, start_after) if answer.is_success
                            else answer.content, {"Content-Type": "application/xml"})

            def do_HEAD(self) -> None:
                self._forward()

            def do_POST(self) -> None:
                if self._object() is not None and ("uploads" in self.path or "uploadId" in self.path):
                    return self._reply(501, _xml_error("NotImplemented", "XML multipart uploads"))
                self._forward()

            def do_PATCH(self) -> None:
                self._forward()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="gcs-xml-api", daemon=True)

    def start(self) -> None:
        """Serve on a background thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving and close the backend client."""
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


def main() -> None:
    """``python -m harness.gcs_xml_api --port N --backend URL``: serve until killed (its own process, so a
    native client in the test process never waits on a Python thread holding the GIL)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True)
    args = parser.parse_args()
    XmlApiFront(args.port, args.backend).server.serve_forever()


if __name__ == "__main__":
    main()
