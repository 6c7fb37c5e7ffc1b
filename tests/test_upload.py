"""`upload_batch` against a fake AEP on 127.0.0.1: the flow, chunking, retries, resume, secrets."""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from pathlib import Path

import pytest
import requests

from aep_fake_server import FakeAEP
from profile_enrichment.errors import UserError
from profile_enrichment.export.upload import (
    STATE_FILE,
    AEPRequestError,
    AEPSettings,
    _parse_batch_status,
    _retry_after_seconds,
    upload_batch,
)

CLIENT_ID = "cid-7f3a9e0b1c2d4e5f"
CLIENT_SECRET = "p8e-SuperSecret-Value-9931"
ORG_ID = "ABCDEF0123456789@AdobeOrg"
SANDBOX = "dev-sandbox"
DATASET_ID = "64f0dataset0001"
SCOPES = "openid,AdobeID,read_organizations"
SECRETS = (CLIENT_ID, CLIENT_SECRET, "fake-access-token")


def start_fake_aep() -> FakeAEP:
    """The local Batch Ingestion server, expecting this module's credentials."""
    return FakeAEP(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        org_id=ORG_ID,
        sandbox=SANDBOX,
        dataset_id=DATASET_ID,
        scopes=SCOPES,
    ).start()


@pytest.fixture
def aep():
    server = start_fake_aep()
    try:
        yield server
    finally:
        server.stop()


def env_for(server: FakeAEP) -> dict[str, str]:
    return {
        "PE_AEP_CLIENT_ID": CLIENT_ID,
        "PE_AEP_CLIENT_SECRET": CLIENT_SECRET,
        "PE_AEP_ORG_ID": ORG_ID,
        "PE_AEP_SANDBOX": SANDBOX,
        "PE_AEP_DATASET_ID": DATASET_ID,
        "PE_AEP_BASE_URL": server.url,
        "PE_AEP_IMS_URL": server.ims_url,
        "PE_AEP_SCOPES": SCOPES,
    }


def make_batch(tmp_path: Path, contents: dict[str, bytes], fmt: str = "json") -> Path:
    batch_dir = tmp_path / "batch"
    batch_dir.mkdir()
    files = []
    for name, data in contents.items():
        (batch_dir / name).write_bytes(data)
        files.append(
            {
                "name": name,
                "records": data.count(b"\n"),
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    manifest = {
        "batch_id": "local-batch-1",
        "tenant": "_acme",
        "as_of_date": "2026-11-01",
        "record_count": sum(f["records"] for f in files),
        "format": fmt,
        "files": files,
    }
    (batch_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return batch_dir


FILES = {
    "part-00000.json": b'{"a": 1}\n{"a": 2}\n',
    "part-00001.json": b'{"a": 3}\n' * 50,
    "part-00002.json": bytes(range(256)) * 3,  # arbitrary bytes survive untouched
}


class Recorder:
    """Captures log lines and sleeps."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.sleeps: list[float] = []

    def log(self, message: str) -> None:
        self.lines.append(message)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def run(server: FakeAEP, batch_dir: Path, rec: Recorder, **kw):
    settings = AEPSettings.from_env(env_for(server))
    kw.setdefault("poll_interval", 5.0)
    return upload_batch(batch_dir, settings=settings, sleep=rec.sleep, log=rec.log, **kw)


def assert_no_secrets(batch_dir: Path, rec: Recorder, *texts: str) -> None:
    blobs = [
        *rec.lines,
        *texts,
        *(p.read_text(errors="replace") for p in batch_dir.iterdir() if p.suffix == ".json"),
    ]
    for blob in blobs:
        for secret in SECRETS:
            assert secret not in blob, f"secret leaked into: {blob[:200]!r}"


def error_texts(err: BaseException) -> list[str]:
    return [str(err), repr(err), *traceback.format_exception(err)]


def state(batch_dir: Path) -> dict:
    return json.loads((batch_dir / STATE_FILE).read_text())


# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_happy_path(aep, tmp_path, fmt):
    batch_dir = make_batch(tmp_path, FILES, fmt)
    manifest_before = (batch_dir / "manifest.json").read_bytes()
    rec = Recorder()
    result = run(aep, batch_dir, rec)

    assert aep.violations == []
    assert result.status == "success"
    assert result.uploaded == tuple(FILES) and result.skipped == () and not result.resumed
    assert result.bytes_sent == sum(map(len, FILES.values()))
    batch = aep.batches[result.aep_batch_id]
    assert batch.format == fmt
    assert batch.files == FILES  # byte-identical
    assert batch.complete_calls == 1 and batch.status == "success"
    assert batch.polls == aep.processing_polls + 1
    assert rec.sleeps == [5.0] * aep.processing_polls
    assert aep.tokens_issued == 1
    assert aep.count("put_file") == len(FILES) and aep.count("patch_chunk") == 0
    saved = state(batch_dir)
    assert saved["aep_batch_id"] == result.aep_batch_id
    assert saved["uploaded"] == list(FILES) and saved["completed"] is True
    assert (batch_dir / "manifest.json").read_bytes() == manifest_before
    assert not [p for p in batch_dir.iterdir() if p.name.endswith(".tmp")]
    assert_no_secrets(batch_dir, rec, repr(AEPSettings.from_env(env_for(aep))))


def test_chunked_upload_with_tiny_threshold(aep, tmp_path):
    big = bytes(range(256)) * 4 + b"tail"  # 1028 bytes
    batch_dir = make_batch(tmp_path, {"small.json": b"{}\n", "big.json": big})
    rec = Recorder()
    result = run(aep, batch_dir, rec, chunk_threshold_bytes=100, chunk_size=300)

    assert aep.violations == []
    batch = aep.batches[result.aep_batch_id]
    assert batch.files == {"small.json": b"{}\n", "big.json": big}
    assert aep.count("put_file") == 1 and aep.count("put_file", "small.json") == 1
    assert aep.count("init_file", "big.json") == 1
    assert aep.count("complete_file", "big.json") == 1
    ranges = [c["headers"]["Content-Range"] for c in aep.calls if c["endpoint"] == "patch_chunk"]
    assert ranges == [
        "bytes 0-299/1028",
        "bytes 300-599/1028",
        "bytes 600-899/1028",
        "bytes 900-1027/1028",
    ]


@pytest.mark.parametrize(
    ("endpoint", "kind", "extra"),
    [
        ("create_batch", 429, {"retry_after": "7"}),
        ("put_file", 429, {"retry_after": "3"}),
        ("put_file", 500, {}),
        ("put_file", 503, {}),
        ("put_file", "drop", {}),
        ("patch_chunk", "drop", {}),
        ("patch_chunk", 502, {}),
        ("complete_file", 500, {}),
        ("complete_batch", "drop", {}),
        ("complete_batch", 500, {}),
        ("get_batch", 429, {}),
        ("token", 500, {}),
        ("token", "drop", {}),
    ],
)
def test_transient_failures_are_retried(aep, tmp_path, endpoint, kind, extra):
    aep.inject(endpoint, kind, times=2, **extra)
    batch_dir = make_batch(tmp_path, FILES)
    rec = Recorder()
    result = run(aep, batch_dir, rec, chunk_threshold_bytes=200, chunk_size=128)

    assert aep.violations == []
    assert result.status == "success"
    assert aep.batches[result.aep_batch_id].files == FILES
    assert len(aep.batches) == 1  # no duplicate batch
    retry_sleeps = [s for s in rec.sleeps if s != 5.0]
    if "retry_after" in extra:
        assert retry_sleeps == [float(extra["retry_after"])] * 2  # Retry-After is honoured
    else:
        assert retry_sleeps == [1.0, 2.0]  # exponential backoff
    assert sum("retry 1/5" in line for line in rec.lines) == 1
    assert_no_secrets(batch_dir, rec)


def test_retries_exhausted_is_a_user_error_and_resumable(aep, tmp_path):
    aep.inject("put_file", 503, times=None)
    batch_dir = make_batch(tmp_path, FILES)
    rec = Recorder()
    with pytest.raises(AEPRequestError) as info:
        run(aep, batch_dir, rec, max_retries=3)
    assert info.value.status == 503
    assert "after 4 attempt(s)" in str(info.value) and "503" in str(info.value)
    assert "rerun" in info.value.hint
    assert rec.sleeps == [1.0, 2.0, 4.0]
    assert_no_secrets(batch_dir, rec, *error_texts(info.value))


def test_4xx_is_a_one_line_user_error(aep, tmp_path):
    body = {
        "type": "https://ns.adobe.com/aep/errors/XDM-1010-400",
        "title": "Invalid file name\nsecond line",
        "status": 400,
        "detail": "The file name is not allowed.",
    }
    aep.inject("put_file", 400, body=body)
    batch_dir = make_batch(tmp_path, FILES)
    rec = Recorder()
    with pytest.raises(UserError) as info:
        run(aep, batch_dir, rec)
    message = str(info.value)
    assert "\n" not in message
    assert "HTTP 400" in message and "Invalid file name second line" in message
    assert "upload part-00000.json" in message
    assert info.value.exit_code == 2
    assert aep.count("put_file") == 1  # a 4xx is not retried
    assert rec.sleeps == []
    assert_no_secrets(batch_dir, rec, *error_texts(info.value))


def test_error_body_echoing_secrets_is_redacted(aep, tmp_path):
    """A (hostile or buggy) server echoing credentials back must not leak them."""
    leaky = {
        "title": f"bad client {CLIENT_ID} secret={CLIENT_SECRET}",
        "detail": "token fake-access-token-1-s3cr3t rejected",
    }
    aep.inject("create_batch", 400, body=leaky)
    batch_dir = make_batch(tmp_path, FILES)
    rec = Recorder()
    with pytest.raises(UserError) as info:
        run(aep, batch_dir, rec)
    assert "***" in str(info.value)
    assert_no_secrets(batch_dir, rec, *error_texts(info.value))

    next_token = f"fake-access-token-{aep.tokens_issued + 1}-s3cr3t"  # this run's token
    leaky = leaky | {"detail": f"token {next_token} rejected"}
    aep.inject("put_file", 500, times=None, body=leaky)
    with pytest.raises(UserError) as info:
        run(aep, batch_dir, rec, max_retries=1)
    assert_no_secrets(batch_dir, rec, *error_texts(info.value))


def test_bad_credentials_are_a_user_error_without_secrets(aep, tmp_path):
    batch_dir = make_batch(tmp_path, FILES)
    rec = Recorder()
    env = env_for(aep) | {"PE_AEP_CLIENT_SECRET": CLIENT_SECRET + "-wrong"}
    with pytest.raises(UserError) as info:
        upload_batch(batch_dir, settings=AEPSettings.from_env(env), sleep=rec.sleep, log=rec.log)
    assert "IMS token request failed: HTTP 401" in str(info.value)
    assert "PE_AEP_CLIENT_SECRET" in info.value.hint
    assert not (batch_dir / STATE_FILE).exists()
    assert_no_secrets(batch_dir, rec, *error_texts(info.value))


def test_expired_token_is_refreshed(aep, tmp_path):
    """Tokens expiring mid-upload (after every sleep here) are renewed, not reported."""
    batch_dir = make_batch(tmp_path, FILES)
    rec = Recorder()
    aep.inject("put_file", 500, times=1)

    def sleep_and_expire(seconds: float) -> None:
        aep.expire_tokens()
        rec.sleep(seconds)

    settings = AEPSettings.from_env(env_for(aep))
    result = upload_batch(batch_dir, settings=settings, sleep=sleep_and_expire, log=rec.log)
    assert result.status == "success" and aep.violations == []
    assert aep.tokens_issued == 1 + len(rec.sleeps)
    assert aep.batches[result.aep_batch_id].files == FILES
    assert_no_secrets(batch_dir, rec)


def test_failed_batch_shows_errors(aep, tmp_path):
    aep.final_status = "failed"
    aep.final_errors = [
        {"code": "INGEST-1212-400", "description": "Encountered 2 errors in the data", "rows": [3]},
        {"code": "XDM-1001", "description": "identityMap is required"},
    ]
    batch_dir = make_batch(tmp_path, FILES)
    rec = Recorder()
    with pytest.raises(UserError) as info:
        run(aep, batch_dir, rec)
    message = str(info.value)
    assert "\n" not in message
    assert "failed" in message and "INGEST-1212-400" in message and "identityMap" in message
    assert any("error: XDM-1001: identityMap is required" in line for line in rec.lines)
    assert state(batch_dir)["completed"] is True
    assert_no_secrets(batch_dir, rec, *error_texts(info.value))


def test_resume_after_interrupted_upload(aep, tmp_path):
    aep.inject("put_file", 500, times=None, file="part-00001.json")
    batch_dir = make_batch(tmp_path, FILES)
    rec = Recorder()
    with pytest.raises(UserError):
        run(aep, batch_dir, rec, max_retries=1)
    first = state(batch_dir)
    assert first["uploaded"] == ["part-00000.json"] and first["completed"] is False
    batch_id = first["aep_batch_id"]

    aep.clear_failures()
    calls_before = len(aep.calls)
    result = run(aep, batch_dir, rec)
    assert result.aep_batch_id == batch_id and len(aep.batches) == 1
    assert result.resumed and result.skipped == ("part-00000.json",)
    assert result.uploaded == ("part-00001.json", "part-00002.json")
    rerun_puts = [c["file"] for c in aep.calls[calls_before:] if c["endpoint"] == "put_file"]
    assert rerun_puts == ["part-00001.json", "part-00002.json"]
    assert aep.batches[batch_id].files == FILES
    assert state(batch_dir)["completed"] is True
    assert any("resuming AEP batch" in line for line in rec.lines)
    assert_no_secrets(batch_dir, rec)


def test_resume_after_exception_between_files(aep, tmp_path):
    """A crash (here: KeyboardInterrupt from the logger) after the first file was sent."""
    batch_dir = make_batch(tmp_path, FILES)
    rec = Recorder()

    def log(message: str) -> None:
        rec.log(message)
        if message.startswith("uploading part-00001.json"):
            raise KeyboardInterrupt

    settings = AEPSettings.from_env(env_for(aep))
    with pytest.raises(KeyboardInterrupt):
        upload_batch(batch_dir, settings=settings, sleep=rec.sleep, log=log)
    assert state(batch_dir)["uploaded"] == ["part-00000.json"]

    result = run(aep, batch_dir, rec)
    assert result.skipped == ("part-00000.json",) and len(aep.batches) == 1
    assert aep.count("put_file", "part-00000.json") == 1
    assert aep.batches[result.aep_batch_id].files == FILES


def test_poll_timeout_then_rerun_only_polls(aep, tmp_path):
    aep.processing_polls = 5
    batch_dir = make_batch(tmp_path, FILES)
    rec = Recorder()
    with pytest.raises(UserError, match="still 'processing' after 10s"):
        run(aep, batch_dir, rec, poll_interval=5.0, poll_timeout=10.0)
    assert state(batch_dir)["completed"] is True

    puts = aep.count("put_file")
    result = run(aep, batch_dir, rec, poll_timeout=60.0)
    assert result.status == "success" and result.uploaded == ()
    assert aep.count("put_file") == puts
    assert aep.batches[result.aep_batch_id].complete_calls == 1


def test_corrupt_file_is_rejected_before_anything_is_sent(aep, tmp_path):
    batch_dir = make_batch(tmp_path, FILES)
    (batch_dir / "part-00002.json").write_bytes(b"X" * len(FILES["part-00002.json"]))
    rec = Recorder()
    with pytest.raises(UserError, match=r"part-00002\.json does not match its sha256"):
        run(aep, batch_dir, rec)
    assert aep.calls == [] and not (batch_dir / STATE_FILE).exists()


def test_state_from_another_dataset_is_refused(aep, tmp_path):
    batch_dir = make_batch(tmp_path, FILES)
    rec = Recorder()
    aep.inject("put_file", 500, times=None)
    with pytest.raises(UserError):
        run(aep, batch_dir, rec, max_retries=0)
    env = env_for(aep) | {"PE_AEP_DATASET_ID": "another-dataset"}
    with pytest.raises(UserError, match="different dataset_id") as info:
        upload_batch(batch_dir, settings=AEPSettings.from_env(env), sleep=rec.sleep, log=rec.log)
    assert STATE_FILE in info.value.hint


@pytest.mark.parametrize(
    "var",
    [
        "PE_AEP_CLIENT_ID",
        "PE_AEP_CLIENT_SECRET",
        "PE_AEP_ORG_ID",
        "PE_AEP_SANDBOX",
        "PE_AEP_DATASET_ID",
    ],
)
def test_missing_env_var_is_named(var, tmp_path, monkeypatch):
    env = {
        "PE_AEP_CLIENT_ID": CLIENT_ID,
        "PE_AEP_CLIENT_SECRET": CLIENT_SECRET,
        "PE_AEP_ORG_ID": ORG_ID,
        "PE_AEP_SANDBOX": SANDBOX,
        "PE_AEP_DATASET_ID": DATASET_ID,
    }
    for key in [k for k in os.environ if k.startswith("PE_AEP_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key != var:
            monkeypatch.setenv(key, value)
    batch_dir = make_batch(tmp_path, FILES)
    with pytest.raises(UserError) as info:
        upload_batch(batch_dir, log=lambda m: None)  # settings=None: read from os.environ
    assert info.value.message == f"missing environment variable {var}"
    for secret in SECRETS:
        assert secret not in " ".join(error_texts(info.value))


def test_settings_defaults_and_url_checks():
    env = {
        "PE_AEP_CLIENT_ID": CLIENT_ID,
        "PE_AEP_CLIENT_SECRET": CLIENT_SECRET,
        "PE_AEP_ORG_ID": ORG_ID,
        "PE_AEP_SANDBOX": SANDBOX,
        "PE_AEP_DATASET_ID": DATASET_ID,
    }
    settings = AEPSettings.from_env(env)
    assert settings.base_url == "https://platform.adobe.io"
    assert settings.ims_url == "https://ims-na1.adobelogin.com/ims/token/v3"
    assert CLIENT_SECRET not in repr(settings) and CLIENT_ID not in repr(settings)
    with pytest.raises(UserError, match="PE_AEP_BASE_URL must use https"):
        AEPSettings.from_env(env | {"PE_AEP_BASE_URL": "http://platform.adobe.io"})


def test_retry_after_and_status_parsing():
    assert _retry_after_seconds("12") == 12.0
    assert _retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert _retry_after_seconds("garbage") is None
    assert _retry_after_seconds("99999") == 300.0  # capped
    assert _parse_batch_status({"b1": {"status": "Success"}}, "b1") == ("success", [])
    assert _parse_batch_status({"status": "failed", "errors": [{"code": "x"}]}, "b1") == (
        "failed",
        [{"code": "x"}],
    )


def test_persistent_401_is_a_user_error_after_one_refresh(aep, tmp_path):
    aep.inject("create_batch", 401, times=None)
    batch_dir = make_batch(tmp_path, FILES)
    rec = Recorder()
    with pytest.raises(AEPRequestError) as info:
        run(aep, batch_dir, rec)
    assert info.value.status == 401 and "create batch failed: HTTP 401" in str(info.value)
    assert "PE_AEP_CLIENT_SECRET" in info.value.hint
    assert aep.count("create_batch") == 2 and aep.tokens_issued == 2
    assert_no_secrets(batch_dir, rec, *error_texts(info.value))


def test_fake_server_is_strict(aep):
    """The fake must reject what AEP rejects, or the tests above prove nothing."""
    token = requests.post(
        aep.ims_url,
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scope": SCOPES,
        },
        timeout=5,
    ).json()["access_token"]
    headers = {
        "Authorization": f"Bearer {token}",
        "x-api-key": CLIENT_ID,
        "x-gw-ims-org-id": ORG_ID,
        "x-sandbox-name": SANDBOX,
    }
    url = f"{aep.url}/data/foundation/import/batches"
    body = {"datasetId": DATASET_ID, "inputFormat": {"format": "json"}}
    for missing in headers:
        partial = {k: v for k, v in headers.items() if k != missing}
        assert requests.post(url, json=body, headers=partial, timeout=5).status_code == 401
    wrong_token = headers | {"Authorization": "Bearer nope"}
    assert requests.post(url, json=body, headers=wrong_token, timeout=5).status_code == 401
    batch_id = requests.post(url, json=body, headers=headers, timeout=5).json()["id"]
    file_url = f"{url}/{batch_id}/datasets/{DATASET_ID}/files/f.json"
    octet = headers | {"Content-Type": "application/octet-stream"}
    assert requests.post(file_url, params={"action": "INITIALIZE"}, headers=headers, timeout=5).ok
    gap = octet | {"Content-Range": "bytes 5-9/10"}  # does not start at 0
    assert requests.patch(file_url, data=b"56789", headers=gap, timeout=5).status_code == 400
    early = requests.post(file_url, params={"action": "COMPLETE"}, headers=headers, timeout=5)
    assert early.status_code == 400
    assert len(aep.violations) == len(headers) + 2


def test_batch_without_files_is_a_clear_user_error(aep, tmp_path):
    batch_dir = make_batch(tmp_path, {})
    manifest = json.loads((batch_dir / "manifest.json").read_text())
    (batch_dir / "manifest.json").write_text(json.dumps(manifest | {"rejectCount": 4}))
    with pytest.raises(UserError, match=r"no files to upload \(4 record\(s\) rejected"):
        run(aep, batch_dir, Recorder())
    assert aep.calls == []
