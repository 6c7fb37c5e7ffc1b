"""A fake AEP (IMS token + Batch Ingestion + Catalog) on 127.0.0.1, for upload tests.

It is strict where AEP is: every API call must carry the four headers with the issued bearer
token, file bodies are recorded byte for byte, chunk ``Content-Range`` must be contiguous. Any
violation is answered with an AEP-style 4xx *and* appended to ``server.violations`` so tests can
assert there were none. Failures are injected with :meth:`FakeAEP.inject`.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

IMS_PATH = "/ims/token/v3"
_FILE_RE = re.compile(r"^/data/foundation/import/batches/([^/]+)/datasets/([^/]+)/files/([^/]+)$")
_BATCH_RE = re.compile(r"^/data/foundation/import/batches/([^/]+)$")
_CATALOG_RE = re.compile(r"^/data/foundation/catalog/batches/([^/]+)$")
_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


@dataclass
class Failure:
    """Answer the next ``times`` matching calls with ``kind`` (429, 500, 400, 401, 'drop')."""

    endpoint: str
    kind: int | str
    times: int | None = 1  # None: forever
    file: str | None = None
    retry_after: str | None = None
    body: dict[str, Any] | None = None


@dataclass
class Batch:
    id: str
    dataset_id: str
    format: str
    status: str = "loading"
    files: dict[str, bytes] = field(default_factory=dict)
    partial: dict[str, dict[str, Any]] = field(default_factory=dict)
    complete_calls: int = 0
    polls: int = 0


class FakeAEP:
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        org_id: str,
        sandbox: str,
        dataset_id: str,
        scopes: str,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.org_id = org_id
        self.sandbox = sandbox
        self.dataset_id = dataset_id
        self.scopes = scopes
        self.lock = threading.Lock()
        self.tokens: set[str] = set()
        self.tokens_issued = 0
        self.batches: dict[str, Batch] = {}
        self.failures: list[Failure] = []
        self.violations: list[str] = []
        self.calls: list[dict[str, Any]] = []  # every request: endpoint, method, path, query, ...
        self.processing_polls = 2  # polls answered "processing" before the final status
        self.final_status = "success"
        self.final_errors: list[dict[str, Any]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def ims_url(self) -> str:
        return self.url + IMS_PATH

    def start(self) -> FakeAEP:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # --- test helpers -------------------------------------------------------------------
    def inject(self, endpoint: str, kind: int | str, times: int | None = 1, **kw: Any) -> None:
        """endpoint: token, create_batch, put_file, init_file, patch_chunk, complete_file,
        complete_batch, get_batch."""
        with self.lock:
            self.failures.append(Failure(endpoint, kind, times, **kw))

    def clear_failures(self) -> None:
        with self.lock:
            self.failures.clear()

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def count(self, endpoint: str, file: str | None = None) -> int:
        return sum(
            1
            for c in self.calls
            if c["endpoint"] == endpoint and (file is None or c["file"] == file)
        )

    def _take_failure(self, endpoint: str, file: str | None) -> Failure | None:
        with self.lock:
            for f in self.failures:
                if f.endpoint == endpoint and (f.file is None or f.file == file):
                    if f.times is not None:
                        f.times -= 1
                        if f.times <= 0:
                            self.failures.remove(f)
                    return f
        return None


def _aep_error(status: int, title: str, detail: str = "") -> dict[str, Any]:
    return {
        "type": f"https://ns.adobe.com/aep/errors/FAKE-{status}",
        "title": title,
        "status": status,
        "detail": detail,
    }


def _make_handler(aep: FakeAEP) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else each response waits ~40 ms for a delayed ACK
        timeout = 10

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output quiet
            pass

        # --- responses --------------------------------------------------------------------
        def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(raw)

        def _violation(self, status: int, message: str) -> None:
            with aep.lock:
                aep.violations.append(f"{self.command} {self.path}: {message}")
            self._send_json(status, _aep_error(status, message))

        def _drop(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        # --- dispatch ---------------------------------------------------------------------
        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def do_PATCH(self) -> None:
            self._handle()

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            path, query = parts.path, parse_qs(parts.query)
            action = (query.get("action") or [None])[0]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            endpoint, ids = self._route(path, action)
            file = unquote(ids[2]) if endpoint and len(ids) == 3 else None
            with aep.lock:
                aep.calls.append(
                    {
                        "endpoint": endpoint,
                        "method": self.command,
                        "path": path,
                        "action": action,
                        "file": file,
                        "headers": dict(self.headers.items()),
                        "body_len": len(body),
                    }
                )
            if endpoint is None:
                return self._violation(404, f"no such endpoint {self.command} {path}")
            failure = aep._take_failure(endpoint, file)
            if failure is not None:
                return self._fail(failure)
            if endpoint == "token":
                return self._token(body)
            if not self._check_headers():
                return None
            getattr(self, "_" + endpoint)(ids, body)
            return None

        def _route(self, path: str, action: str | None) -> tuple[str | None, tuple[str, ...]]:
            m = self.command
            if path == IMS_PATH and m == "POST":
                return "token", ()
            if path == "/data/foundation/import/batches" and m == "POST":
                return "create_batch", ()
            if match := _FILE_RE.match(path):
                ids = match.groups()
                if m == "PUT" and action is None:
                    return "put_file", ids
                if m == "POST" and action == "INITIALIZE":
                    return "init_file", ids
                if m == "PATCH" and action is None:
                    return "patch_chunk", ids
                if m == "POST" and action == "COMPLETE":
                    return "complete_file", ids
            if (match := _BATCH_RE.match(path)) and m == "POST" and action == "COMPLETE":
                return "complete_batch", match.groups()
            if (match := _CATALOG_RE.match(path)) and m == "GET":
                return "get_batch", match.groups()
            return None, ()

        def _fail(self, f: Failure) -> None:
            if f.kind == "drop":
                return self._drop()
            status = int(f.kind)
            headers = {"Retry-After": f.retry_after} if f.retry_after is not None else {}
            body = f.body or _aep_error(status, f"Injected {status}", "fake failure")
            return self._send_json(status, body, headers)

        # --- auth -------------------------------------------------------------------------
        def _token(self, body: bytes) -> None:
            if self.headers.get("Content-Type", "").split(";")[0] != (
                "application/x-www-form-urlencoded"
            ):
                return self._violation(400, "token request is not a form")
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            expected = {
                "grant_type": "client_credentials",
                "client_id": aep.client_id,
                "client_secret": aep.client_secret,
                "scope": aep.scopes,
            }
            if form != expected:
                with aep.lock:
                    aep.violations.append("token request with wrong form fields")
                return self._send_json(
                    401, {"error": "invalid_client", "error_description": "invalid client"}
                )
            with aep.lock:
                aep.tokens_issued += 1
                token = f"fake-access-token-{aep.tokens_issued}-s3cr3t"
                aep.tokens.add(token)
            return self._send_json(
                200, {"access_token": token, "token_type": "bearer", "expires_in": 86399}
            )

        def _check_headers(self) -> bool:
            h = self.headers
            for name in ("Authorization", "x-api-key", "x-gw-ims-org-id", "x-sandbox-name"):
                if not h.get(name):
                    self._violation(401, f"missing header {name}")
                    return False
            auth = h["Authorization"]
            if not auth.startswith("Bearer ") or auth[len("Bearer ") :] not in aep.tokens:
                # Not a violation in itself: an expired token is a normal event (client re-auths).
                self._send_json(401, _aep_error(401, "Unauthorized", "bearer token invalid"))
                return False
            if h["x-api-key"] != aep.client_id:
                self._violation(403, "x-api-key does not match the client id")
                return False
            if h["x-gw-ims-org-id"] != aep.org_id or h["x-sandbox-name"] != aep.sandbox:
                self._violation(403, "wrong org or sandbox header")
                return False
            return True

        # --- batch ingestion ----------------------------------------------------------------
        def _create_batch(self, ids: tuple[str, ...], body: bytes) -> None:
            try:
                req = json.loads(body)
                fmt = req["inputFormat"]["format"]
                dataset = req["datasetId"]
            except (ValueError, KeyError, TypeError):
                return self._violation(400, "bad create-batch body")
            if dataset != aep.dataset_id or fmt not in ("json", "parquet"):
                return self._violation(400, "wrong datasetId or format")
            with aep.lock:
                batch_id = f"01FAKEBATCH{len(aep.batches) + 1:04d}"
                aep.batches[batch_id] = Batch(batch_id, dataset, fmt)
            return self._send_json(
                201,
                {"id": batch_id, "imsOrg": aep.org_id, "status": "loading", "created": 1},
            )

        def _batch_for_file(self, ids: tuple[str, ...]) -> Batch | None:
            batch = aep.batches.get(ids[0])
            if batch is None:
                self._send_json(404, _aep_error(404, "Batch not found", ids[0]))
                return None
            if ids[1] != batch.dataset_id:
                self._violation(400, "dataset id in path does not match the batch")
                return None
            if batch.status != "loading":
                self._violation(400, f"batch is {batch.status}, not loading")
                return None
            return batch

        def _octet_stream(self) -> bool:
            if self.headers.get("Content-Type") != "application/octet-stream":
                self._violation(400, "Content-Type must be application/octet-stream")
                return False
            return True

        def _put_file(self, ids: tuple[str, ...], body: bytes) -> None:
            if (batch := self._batch_for_file(ids)) is None or not self._octet_stream():
                return None
            with aep.lock:
                batch.files[unquote(ids[2])] = body
            return self._send_json(200, {})

        def _init_file(self, ids: tuple[str, ...], body: bytes) -> None:
            if (batch := self._batch_for_file(ids)) is None:
                return None
            with aep.lock:
                batch.partial[unquote(ids[2])] = {"data": bytearray(), "size": None, "ranges": []}
            return self._send_json(201, {})

        def _patch_chunk(self, ids: tuple[str, ...], body: bytes) -> None:
            if (batch := self._batch_for_file(ids)) is None or not self._octet_stream():
                return None
            part = batch.partial.get(unquote(ids[2]))
            if part is None:
                return self._violation(400, "PATCH before INITIALIZE")
            match = _RANGE_RE.match(self.headers.get("Content-Range", ""))
            if not match:
                return self._violation(400, "missing or bad Content-Range")
            start, end, size = map(int, match.groups())
            if part["size"] is None:
                part["size"] = size
            if size != part["size"]:
                return self._violation(400, "Content-Range total changed between chunks")
            if start != len(part["data"]):
                return self._violation(
                    400, f"chunk starts at {start}, expected {len(part['data'])}"
                )
            if end - start + 1 != len(body) or end >= size:
                return self._violation(400, "Content-Range does not match the body")
            part["data"].extend(body)
            part["ranges"].append((start, end, size))
            return self._send_json(200, {})

        def _complete_file(self, ids: tuple[str, ...], body: bytes) -> None:
            if (batch := self._batch_for_file(ids)) is None:
                return None
            name = unquote(ids[2])
            part = batch.partial.get(name)
            if part is None or part["size"] is None or len(part["data"]) != part["size"]:
                return self._violation(400, "COMPLETE before all chunks arrived")
            with aep.lock:
                batch.files[name] = bytes(part["data"])
            return self._send_json(201, {})

        def _complete_batch(self, ids: tuple[str, ...], body: bytes) -> None:
            batch = aep.batches.get(ids[0])
            if batch is None:
                return self._send_json(404, _aep_error(404, "Batch not found", ids[0]))
            with aep.lock:
                batch.complete_calls += 1
                if batch.status == "loading":
                    batch.status = "processing"
            return self._send_json(200, {})

        def _get_batch(self, ids: tuple[str, ...], body: bytes) -> None:
            batch = aep.batches.get(ids[0])
            if batch is None:
                return self._send_json(404, _aep_error(404, "Batch not found", ids[0]))
            with aep.lock:
                batch.polls += 1
                if batch.status == "processing" and batch.polls > aep.processing_polls:
                    batch.status = aep.final_status
                record: dict[str, Any] = {"id": batch.id, "status": batch.status}
                if batch.status == "failed":
                    record["errors"] = aep.final_errors
            # The real Catalog API keys the answer by batch id.
            return self._send_json(200, {batch.id: record})

    return Handler
