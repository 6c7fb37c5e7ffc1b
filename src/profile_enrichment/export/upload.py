"""Upload an exported batch directory to Adobe Experience Platform (Batch Ingestion API).

``upload_batch(batch_dir)`` drives the documented flow: get an OAuth server-to-server token from
IMS, create an AEP batch, send every file listed in ``manifest.json`` (one ``PUT``, or the chunked
large-file upload above ``chunk_threshold_bytes``), complete the batch and poll the Catalog until it
ends ``success`` or ``failed``.

Why it is built this way:

* **Resumable.** Progress lives in ``BATCH_DIR/upload_state.json`` (AEP batch id, uploaded file
  names, whether the batch was completed), written atomically after every step. A rerun continues
  the same AEP batch and skips the files already sent, so a flaky network never forces a re-upload.
* **Retries.** 429 (honouring ``Retry-After``), 5xx and dropped connections are retried with
  exponential backoff; ``sleep`` is injectable so tests run instantly. Any other 4xx is the user's
  to fix and becomes a one-line :class:`~profile_enrichment.errors.UserError`.
* **Secrets stay secret.** Credentials come only from environment variables. The client id,
  client secret and access tokens are redacted from every log line and every error message, and
  are never written to disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, quote_plus, urlsplit

import requests

from profile_enrichment.errors import UserError
from profile_enrichment.fsutil import atomic_write_text

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_IMS_URL",
    "DEFAULT_SCOPES",
    "STATE_FILE",
    "AEPRequestError",
    "AEPSettings",
    "UploadResult",
    "upload_batch",
]

DEFAULT_BASE_URL = "https://platform.adobe.io"
DEFAULT_IMS_URL = "https://ims-na1.adobelogin.com/ims/token/v3"
DEFAULT_SCOPES = "openid,AdobeID,read_organizations,additional_info.projectedProductContext,session"
STATE_FILE = "upload_state.json"
MANIFEST_FILE = "manifest.json"
MAX_FILES_PER_BATCH = 1500  # AEP guardrail
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
RETRY_AFTER_MAX_SECONDS = 300.0
REQUEST_TIMEOUT = (10.0, 300.0)  # (connect, read) seconds: never hang forever

SUCCESS_STATUSES = frozenset({"success", "active"})
FAILED_STATUSES = frozenset({"failed", "failure", "aborted", "abandoned", "inactive", "deleted"})

_REQUIRED_ENV = {
    "client_id": "PE_AEP_CLIENT_ID",
    "client_secret": "PE_AEP_CLIENT_SECRET",
    "org_id": "PE_AEP_ORG_ID",
    "sandbox": "PE_AEP_SANDBOX",
    "dataset_id": "PE_AEP_DATASET_ID",
}
_OPTIONAL_ENV = {
    "base_url": ("PE_AEP_BASE_URL", DEFAULT_BASE_URL),
    "ims_url": ("PE_AEP_IMS_URL", DEFAULT_IMS_URL),
    "scopes": ("PE_AEP_SCOPES", DEFAULT_SCOPES),
}
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class AEPRequestError(UserError):
    """An AEP/IMS call failed for good (a 4xx, or retries exhausted). ``status`` is the HTTP status
    (``None`` for a connection failure). The message is one line and carries no secrets."""

    def __init__(self, message: str, hint: str | None = None, *, status: int | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


@dataclass(frozen=True)
class AEPSettings:
    """Connection settings. Build it with :meth:`from_env`; secrets are hidden from ``repr``."""

    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    org_id: str
    sandbox: str
    dataset_id: str
    base_url: str = DEFAULT_BASE_URL
    ims_url: str = DEFAULT_IMS_URL
    scopes: str = DEFAULT_SCOPES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AEPSettings:
        """Read ``PE_AEP_*`` variables (``os.environ`` by default). Missing ones raise a
        :class:`UserError` that names the variables, never their values."""
        env = os.environ if environ is None else environ
        values = {attr: (env.get(var) or "").strip() for attr, var in _REQUIRED_ENV.items()}
        missing = [_REQUIRED_ENV[attr] for attr, value in values.items() if not value]
        if missing:
            plural = "s" if len(missing) > 1 else ""
            raise UserError(
                f"missing environment variable{plural} {', '.join(missing)}",
                hint="export the AEP credentials of your Developer Console project "
                "(PE_AEP_CLIENT_ID, PE_AEP_CLIENT_SECRET, PE_AEP_ORG_ID, PE_AEP_SANDBOX, "
                "PE_AEP_DATASET_ID)",
            )
        for attr, (var, default) in _OPTIONAL_ENV.items():
            values[attr] = (env.get(var) or "").strip() or default
        for attr in ("base_url", "ims_url"):
            values[attr] = _checked_url(values[attr], _OPTIONAL_ENV[attr][0])
        return cls(**values)

    def secrets(self) -> tuple[str, ...]:
        """The values that must never be logged or written anywhere."""
        return (self.client_secret, self.client_id)


@dataclass(frozen=True)
class UploadResult:
    """What happened. ``uploaded`` are the files sent by this run, ``skipped`` the ones an earlier,
    interrupted run had already sent."""

    aep_batch_id: str
    status: str
    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]
    bytes_sent: int
    resumed: bool

    def summary(self) -> str:
        return (
            f"AEP batch {self.aep_batch_id}: {self.status} "
            f"({len(self.uploaded)} file(s) uploaded, {len(self.skipped)} already uploaded, "
            f"{self.bytes_sent} bytes sent)"
        )


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def upload_batch(
    batch_dir: Path,
    *,
    settings: AEPSettings | None = None,
    chunk_threshold_bytes: int = 256 * 1024 * 1024,
    chunk_size: int = 64 * 1024 * 1024,
    poll_interval: float = 10.0,
    poll_timeout: float = 1800.0,
    max_retries: int = 5,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> UploadResult:
    """Upload ``batch_dir`` (``manifest.json`` + files) to AEP and wait for the batch to land.

    Raises :class:`UserError` for anything the user can fix or retry (missing credentials, a
    corrupt file, a 4xx from AEP, a failed batch, AEP unreachable after ``max_retries``). Rerun the
    same call to resume an interrupted upload.
    """
    if chunk_size <= 0 or chunk_threshold_bytes < 0 or max_retries < 0:
        raise ValueError("chunk_size must be > 0, chunk_threshold_bytes and max_retries >= 0")
    settings = settings if settings is not None else AEPSettings.from_env()
    redactor = _Redactor(settings.secrets())
    safe_log = redactor.wrap_log(log)
    try:
        with requests.Session() as session:
            client = _Client(settings, session, redactor, max_retries, sleep, safe_log)
            return _run(
                Path(batch_dir),
                settings,
                client,
                chunk_threshold_bytes=chunk_threshold_bytes,
                chunk_size=chunk_size,
                poll_interval=poll_interval,
                poll_timeout=poll_timeout,
                sleep=sleep,
                log=safe_log,
            )
    except UserError as err:
        redactor.scrub_user_error(err)
        raise
    except Exception as err:  # a bug: keep the traceback, but never leak a secret in its text
        if redactor.contains_secret(str(err)):
            raise RuntimeError(redactor(f"{type(err).__name__}: {err}")) from None
        raise


# --------------------------------------------------------------------------------------------
# The flow
# --------------------------------------------------------------------------------------------


def _run(
    batch_dir: Path,
    settings: AEPSettings,
    client: _Client,
    *,
    chunk_threshold_bytes: int,
    chunk_size: int,
    poll_interval: float,
    poll_timeout: float,
    sleep: Callable[[float], None],
    log: Callable[[str], None],
) -> UploadResult:
    manifest, manifest_sha = _read_manifest(batch_dir)
    files: list[dict[str, Any]] = manifest["files"]
    state_path = batch_dir / STATE_FILE
    state = _load_state(state_path, settings, manifest_sha)
    resumed = state is not None
    if state is None:
        state = {
            "aep_batch_id": None,
            "dataset_id": settings.dataset_id,
            "sandbox": settings.sandbox,
            "manifest_sha256": manifest_sha,
            "uploaded": [],
            "completed": False,
        }
    already = set(state["uploaded"])
    pending = [f for f in files if f["name"] not in already]
    skipped = tuple(f["name"] for f in files if f["name"] in already)

    if not state["completed"]:
        # Fail before touching AEP if any file we still have to send is missing or corrupt.
        for entry in pending:
            _verify_file(batch_dir, entry)

    batch_id: str | None = state["aep_batch_id"]
    if batch_id is None:
        batch_id = client.create_batch(manifest["format"])
        state["aep_batch_id"] = batch_id
        _write_state(state_path, state)
        log(f"created AEP batch {batch_id} in sandbox {settings.sandbox}")
    else:
        log(
            f"resuming AEP batch {batch_id}: {len(skipped)} of {len(files)} file(s) already "
            f"uploaded{', batch already completed' if state['completed'] else ''}"
        )

    uploaded: list[str] = []
    bytes_sent = 0
    if not state["completed"]:
        for i, entry in enumerate(pending, start=1):
            name, size = entry["name"], entry["bytes"]
            path = batch_dir / name
            chunked = size > chunk_threshold_bytes
            log(
                f"uploading {name} ({size} bytes{', chunked' if chunked else ''}) "
                f"[{i}/{len(pending)}]"
            )
            if chunked:
                client.upload_chunked(batch_id, name, path, size, chunk_size)
            else:
                client.upload_file(batch_id, name, path)
            uploaded.append(name)
            bytes_sent += size
            state["uploaded"].append(name)
            _write_state(state_path, state)
        client.complete_batch(batch_id)
        state["completed"] = True
        _write_state(state_path, state)
        log(f"completed AEP batch {batch_id}; waiting for ingestion")

    status = _poll(client, batch_id, poll_interval, poll_timeout, sleep, log)
    state["status"] = status
    _write_state(state_path, state)
    return UploadResult(batch_id, status, tuple(uploaded), skipped, bytes_sent, resumed)


def _poll(
    client: _Client,
    batch_id: str,
    interval: float,
    timeout: float,
    sleep: Callable[[float], None],
    log: Callable[[str], None],
) -> str:
    """Poll the Catalog until the batch succeeds (return) or fails (UserError with its errors)."""
    started = time.monotonic()
    waited = 0.0
    last = None
    while True:
        status, errors = client.batch_status(batch_id)
        if status != last:
            log(f"AEP batch {batch_id}: {status or 'unknown'}")
            last = status
        if status in SUCCESS_STATUSES:
            return status
        if status in FAILED_STATUSES:
            lines = [_format_batch_error(e) for e in errors] or ["no error details returned"]
            for line in lines:
                log(f"  error: {line}")
            shown = "; ".join(lines[:5]) + (f" (+{len(lines) - 5} more)" if len(lines) > 5 else "")
            raise AEPRequestError(
                client.redact(f"AEP batch {batch_id} {status}: {_one_line(shown, 500)}"),
                hint=f"fix the records, export again and delete {STATE_FILE} to upload a new batch",
            )
        if max(waited, time.monotonic() - started) >= timeout:
            raise AEPRequestError(
                f"AEP batch {batch_id} is still '{status}' after {timeout:g}s",
                hint="the files are uploaded and the batch completed; rerun the same command "
                "later to keep waiting",
            )
        sleep(interval)
        waited += interval


# --------------------------------------------------------------------------------------------
# HTTP client with retries, token refresh and redaction
# --------------------------------------------------------------------------------------------

Body = bytes | Callable[[], BinaryIO] | None


class _Client:
    def __init__(
        self,
        settings: AEPSettings,
        session: requests.Session,
        redactor: _Redactor,
        max_retries: int,
        sleep: Callable[[float], None],
        log: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.session = session
        self.redactor = redactor
        self.max_retries = max_retries
        self.sleep = sleep
        self.log = log
        self._token: str | None = None
        self.import_url = f"{settings.base_url}/data/foundation/import"
        self.catalog_url = f"{settings.base_url}/data/foundation/catalog"

    def redact(self, text: str) -> str:
        return self.redactor(text)

    # --- auth -------------------------------------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            s = self.settings
            form = {
                "grant_type": "client_credentials",
                "client_id": s.client_id,
                "client_secret": s.client_secret,
                "scope": s.scopes,
            }
            resp = self._send("POST", s.ims_url, what="IMS token request", auth=False, form=form)
            self._check(resp, "IMS token request", hint_auth=True)
            try:
                token = resp.json()["access_token"]
            except (ValueError, KeyError, TypeError):
                raise AEPRequestError(
                    "IMS token request returned no access_token",
                    hint="check PE_AEP_IMS_URL",
                    status=resp.status_code,
                ) from None
            if not isinstance(token, str) or not token:
                raise AEPRequestError("IMS token request returned an empty access_token")
            self.redactor.add(token)
            self._token = token
        return self._token

    def _auth_headers(self) -> dict[str, str]:
        s = self.settings
        return {
            "Authorization": f"Bearer {self.token()}",
            "x-api-key": s.client_id,
            "x-gw-ims-org-id": s.org_id,
            "x-sandbox-name": s.sandbox,
        }

    # --- API calls --------------------------------------------------------------------------
    def create_batch(self, fmt: str) -> str:
        body = {"datasetId": self.settings.dataset_id, "inputFormat": {"format": fmt}}
        resp = self._send("POST", f"{self.import_url}/batches", what="create batch", json_body=body)
        self._check(resp, "create batch")
        try:
            batch_id = resp.json()["id"]
        except (ValueError, KeyError, TypeError):
            batch_id = None
        if not isinstance(batch_id, str) or not batch_id:
            raise AEPRequestError("create batch: AEP returned no batch id", status=resp.status_code)
        return batch_id

    def _file_url(self, batch_id: str, name: str) -> str:
        return (
            f"{self.import_url}/batches/{quote(batch_id, safe='')}/datasets/"
            f"{quote(self.settings.dataset_id, safe='')}/files/{quote(name, safe='')}"
        )

    def upload_file(self, batch_id: str, name: str, path: Path) -> None:
        what = f"upload {name}"
        resp = self._send(
            "PUT",
            self._file_url(batch_id, name),
            what=what,
            body=lambda: path.open("rb"),  # streamed, reopened on every attempt
            headers={"Content-Type": "application/octet-stream"},
        )
        self._check(resp, what)

    def upload_chunked(
        self, batch_id: str, name: str, path: Path, size: int, chunk_size: int
    ) -> None:
        url = self._file_url(batch_id, name)
        what = f"initialize {name}"
        self._check(self._send("POST", url, what=what, params={"action": "INITIALIZE"}), what)
        with path.open("rb") as fh:
            for start in range(0, size, chunk_size):
                chunk = fh.read(min(chunk_size, size - start))
                end = start + len(chunk) - 1
                what = f"upload {name} bytes {start}-{end}/{size}"
                resp = self._send(
                    "PATCH",
                    url,
                    what=what,
                    body=chunk,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"bytes {start}-{end}/{size}",
                    },
                )
                self._check(resp, what)
        what = f"complete {name}"
        self._check(self._send("POST", url, what=what, params={"action": "COMPLETE"}), what)

    def complete_batch(self, batch_id: str) -> None:
        url = f"{self.import_url}/batches/{quote(batch_id, safe='')}"
        resp = self._send("POST", url, what="complete batch", params={"action": "COMPLETE"})
        self._check(resp, "complete batch")

    def batch_status(self, batch_id: str) -> tuple[str, list[Any]]:
        url = f"{self.catalog_url}/batches/{quote(batch_id, safe='')}"
        resp = self._send("GET", url, what="batch status")
        self._check(resp, "batch status")
        try:
            body = resp.json()
        except ValueError:
            body = None
        return _parse_batch_status(body, batch_id)

    # --- plumbing ---------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        auth: bool = True,
        body: Body = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send with retries on 429/5xx/connection errors and one token refresh on 401.
        Returns the first non-retryable response; raises AEPRequestError when retries run out."""
        attempt = 0
        refreshed = False
        while True:
            hdrs = dict(headers or {})
            if json_body is not None:
                hdrs["Content-Type"] = "application/json"
            if auth:
                hdrs.update(self._auth_headers())
            status: int | None = None
            retry_after: float | None = None
            try:
                with _opened(body, json_body) as data:
                    resp = self.session.request(
                        method,
                        url,
                        params=params,
                        data=form if form is not None else data,
                        headers=hdrs,
                        timeout=REQUEST_TIMEOUT,
                    )
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                problem = f"connection failed ({type(exc).__name__})"
            else:
                status = resp.status_code
                if auth and status == 401 and not refreshed:
                    refreshed = True
                    self._token = None
                    resp.close()
                    self.log(f"{what}: access token rejected (401); requesting a new one")
                    continue
                if status != 429 and status < 500:
                    return resp
                problem = f"HTTP {status}{_title_suffix(resp, self.redactor)}"
                retry_after = _retry_after_seconds(resp.headers.get("Retry-After"))
                resp.close()
            if attempt >= self.max_retries:
                raise AEPRequestError(
                    self.redact(f"{what} failed after {attempt + 1} attempt(s): {problem}"),
                    hint="AEP or the network is unavailable; rerun the same command later to "
                    "resume where it stopped",
                    status=status,
                ) from None
            delay = (
                retry_after
                if retry_after is not None
                else min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
            )
            attempt += 1
            self.log(f"{what}: {problem}; retry {attempt}/{self.max_retries} in {delay:g}s")
            self.sleep(delay)

    def _check(self, resp: requests.Response, what: str, *, hint_auth: bool = False) -> None:
        """Turn a non-2xx (necessarily a 4xx here) into a one-line AEPRequestError."""
        status = resp.status_code
        if 200 <= status < 300:
            return
        message = self.redact(f"{what} failed: HTTP {status}{_title_suffix(resp, self.redactor)}")
        raise AEPRequestError(
            _one_line(message, 400), hint=_hint_for(status, hint_auth), status=status
        )


def _hint_for(status: int, auth_call: bool) -> str:
    if auth_call or status in (401, 403):
        return (
            "check PE_AEP_CLIENT_ID, PE_AEP_CLIENT_SECRET, PE_AEP_ORG_ID, PE_AEP_SCOPES and that "
            "the project has access to PE_AEP_SANDBOX"
        )
    if status == 404:
        return (
            f"check PE_AEP_DATASET_ID and PE_AEP_SANDBOX; if the AEP batch expired, delete "
            f"{STATE_FILE} to start a new one"
        )
    return (
        f"fix the request and rerun; if the AEP batch can no longer be used, delete {STATE_FILE} "
        "to start a new one"
    )


@contextlib.contextmanager
def _opened(body: Body, json_body: Any) -> Iterator[bytes | BinaryIO | None]:
    if json_body is not None:
        yield json.dumps(json_body).encode()
    elif callable(body):
        fh = body()
        try:
            yield fh
        finally:
            fh.close()
    else:
        yield body


def _title_suffix(resp: requests.Response, redactor: _Redactor) -> str:
    title = _aep_error_title(resp)
    return f" {redactor(title)}" if title else ""


def _aep_error_title(resp: requests.Response) -> str | None:
    """The title of an AEP (``title``/``detail``, or ``message``) or IMS (``error``) error body."""
    try:
        body = resp.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    parts: list[str] = []
    for key in ("title", "message", "error", "error_description", "detail"):
        value = body.get(key)
        if isinstance(value, str) and value.strip() and value.strip() not in parts:
            parts.append(value.strip())
        if len(parts) == 2:
            break
    code = body.get("error_code") or body.get("code")
    text = ": ".join(parts)
    if isinstance(code, str) and code and code not in text:
        text = f"{text} [{code}]" if text else code
    return _one_line(text, 300) or None


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_SECONDS)


def _parse_batch_status(body: Any, batch_id: str) -> tuple[str, list[Any]]:
    """Catalog returns ``{"<batchId>": {...}}``; accept a bare record too."""
    record = body
    if isinstance(body, dict) and isinstance(body.get(batch_id), dict):
        record = body[batch_id]
    if not isinstance(record, dict):
        return "", []
    status = str(record.get("status") or "").strip().lower()
    errors = record.get("errors") or []
    return status, errors if isinstance(errors, list) else [errors]


def _format_batch_error(error: Any) -> str:
    if not isinstance(error, dict):
        return _one_line(str(error), 300)
    code = error.get("code") or error.get("error_code")
    text = error.get("description") or error.get("message") or error.get("title") or ""
    rows = error.get("rows")
    line = f"{code}: {text}" if code else str(text)
    if isinstance(rows, list) and rows:
        line += f" (rows {', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''})"
    return _one_line(line or json.dumps(error, sort_keys=True), 300)


def _one_line(text: str, limit: int) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Redactor:
    """Replaces every known secret (and its URL-encoded forms) with ``***``."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._needles: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        if not secret:
            return
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            if form not in self._needles:
                self._needles.append(form)
        self._needles.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for needle in self._needles:
            text = text.replace(needle, "***")
        return text

    def contains_secret(self, text: str) -> bool:
        return any(needle in text for needle in self._needles)

    def wrap_log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        return lambda message: log(self(message))

    def scrub_user_error(self, err: UserError) -> None:
        err.message = self(err.message)
        if err.hint:
            err.hint = self(err.hint)
        err.args = (err.message, *err.args[1:])


def _checked_url(url: str, var: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{var} is not an http(s) URL", hint="e.g. https://platform.adobe.io")
    if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS:
        raise UserError(
            f"{var} must use https (plain http is only allowed for localhost)",
            hint="credentials and tokens must not travel unencrypted",
        )
    return url.rstrip("/")


# --------------------------------------------------------------------------------------------
# Manifest, files and state
# --------------------------------------------------------------------------------------------

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def _read_manifest(batch_dir: Path) -> tuple[dict[str, Any], str]:
    if not batch_dir.is_dir():
        raise UserError(f"batch directory {batch_dir} does not exist", hint="run the export first")
    path = batch_dir / MANIFEST_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(
            f"{path} not found", hint="point upload at a directory written by the export step"
        ) from None
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc})", hint="re-run the export") from None
    bad = f"{path} is malformed"
    if not isinstance(manifest, dict):
        raise UserError(f"{bad}: expected an object", hint="re-run the export")
    if manifest.get("format") not in ("json", "parquet"):
        raise UserError(
            f"{bad}: format must be 'json' or 'parquet', not {manifest.get('format')!r}",
            hint="re-run the export",
        )
    files = manifest.get("files")
    if not isinstance(files, list):
        raise UserError(f"{bad}: 'files' is missing", hint="re-run the export")
    if not files:
        rejected = manifest.get("rejectCount")
        why = f" ({rejected} record(s) rejected, see rejects.jsonl)" if rejected else ""
        raise UserError(
            f"{batch_dir} has no files to upload{why}", hint="fix the export, then run it again"
        )
    if len(files) > MAX_FILES_PER_BATCH:
        raise UserError(
            f"{bad}: {len(files)} files exceed AEP's {MAX_FILES_PER_BATCH} files per batch",
            hint="export fewer, larger files",
        )
    seen: set[str] = set()
    for entry in files:
        name = entry.get("name") if isinstance(entry, dict) else None
        if (
            not isinstance(name, str)
            or not name
            or name in (".", "..")
            or "/" in name
            or "\\" in name
            or name in (MANIFEST_FILE, STATE_FILE)
        ):
            raise UserError(f"{bad}: bad file name {name!r}", hint="re-run the export")
        if name in seen:
            raise UserError(f"{bad}: file {name} listed twice", hint="re-run the export")
        seen.add(name)
        size, sha = entry.get("bytes"), entry.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UserError(f"{bad}: {name} has no valid 'bytes'", hint="re-run the export")
        if not isinstance(sha, str) or not _SHA256_RE.match(sha):
            raise UserError(f"{bad}: {name} has no valid 'sha256'", hint="re-run the export")
    return manifest, hashlib.sha256(raw).hexdigest()


def _verify_file(batch_dir: Path, entry: Mapping[str, Any]) -> None:
    name = entry["name"]
    path = batch_dir / name
    if not path.is_file():
        raise UserError(f"{path} is listed in the manifest but missing", hint="re-run the export")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise UserError(
            f"{path} is {size} bytes, the manifest says {entry['bytes']}: the file is corrupt",
            hint="re-run the export",
        )
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(block)
    if digest.hexdigest() != entry["sha256"].lower():
        raise UserError(
            f"{path} does not match its sha256 in the manifest: the file is corrupt",
            hint="re-run the export",
        )


def _load_state(path: Path, settings: AEPSettings, manifest_sha: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    delete = f"delete {path} to start a new AEP batch"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON", hint=delete) from None
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("aep_batch_id"), str)
        or not isinstance(state.get("uploaded"), list)
        or not isinstance(state.get("completed"), bool)
    ):
        raise UserError(f"{path} is malformed", hint=delete)
    for key, now in (
        ("dataset_id", settings.dataset_id),
        ("sandbox", settings.sandbox),
        ("manifest_sha256", manifest_sha),
    ):
        if key in state and state[key] != now:
            what = "the manifest" if key == "manifest_sha256" else key
            raise UserError(
                f"{path} belongs to an upload with a different {what}; refusing to mix batches",
                hint=delete,
            )
    return state


def _write_state(path: Path, state: Mapping[str, Any]) -> None:
    """Write atomically: a crash leaves either the old or the new state, never half a file."""
    atomic_write_text(path, json.dumps(state, indent=2, sort_keys=True) + "\n")
