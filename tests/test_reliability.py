"""Reliability and privacy of a whole run, proven on real runs of the CLI.

- Determinism: two runs on the same inputs, in fresh folders, leave the same rows in every
  warehouse table (bit for bit), byte-identical export files and identical model artifacts.
- Concurrency: a second run on a warehouse that a run is building fails at once, with one
  line and exit 2, and the first run finishes unaffected (it is the second run above).
- Privacy: raw e-mail addresses put into the inputs in every place a user might put them
  never reach an export, an artifact, a log, dbt's target folder or the console.
- Containment: a run writes only into the folders it is configured with; the project folder
  itself is left as it was.
- Credentials: a failing upload prints no secret and writes none to the batch folder.
- Vars that reach SQL refuse injection attempts with a clear error naming the var.

Crash safety (SIGKILL at random points) is in test_crash.py, which `make test-slow` runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
from pathlib import Path

import duckdb
import pytest

from conftest import BIN_DIR, _env, copy_project, run_cli, run_dbt
from outputs import assert_batches_complete, table_hashes, tree_digest

pytestmark = pytest.mark.dbt

EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


def _lock_is_held(warehouse: Path) -> bool:
    lock = warehouse.with_name(warehouse.name + ".lock")
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# determinism + concurrency
# --------------------------------------------------------------------------------------------
def test_a_second_run_is_identical_and_a_concurrent_run_is_refused(
    built_warehouse: Path, small_raw: Path, tmp_path: Path
) -> None:
    first = built_warehouse.parent  # built by conftest: warehouse, artifacts/, exports/
    warehouse = tmp_path / "warehouse.duckdb"
    run = subprocess.Popen(
        [
            str(BIN_DIR / "profile-enrichment"),
            "run",
            "--raw",
            str(small_raw),
            "--warehouse",
            str(warehouse),
            "--artifacts",
            str(tmp_path / "artifacts"),
            "--quiet",
        ],
        env=_env({"PE_EXPORT_DIR": str(tmp_path / "exports")}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not _lock_is_held(warehouse):
            assert run.poll() is None, "the run ended before it claimed the warehouse"
            subprocess.run(["sleep", "0.1"], check=True)
        intruder = run_cli(
            "run",
            "--raw",
            str(small_raw),
            "--warehouse",
            str(warehouse),
            "--artifacts",
            str(tmp_path / "intruder-artifacts"),
            env={"PE_EXPORT_DIR": str(tmp_path / "intruder-exports")},
            timeout=120,
        )
        still_running = run.poll() is None
        stdout, stderr = run.communicate(timeout=900)
    finally:
        if run.poll() is None:
            run.kill()
    assert intruder.returncode == 2, intruder.stdout + intruder.stderr
    assert intruder.stderr.startswith("error: another run holds the warehouse")
    assert len(intruder.stderr.strip().splitlines()) == 1 and "Traceback" not in intruder.stderr
    assert still_running, "the second run waited for the first instead of failing at once"
    assert not (tmp_path / "intruder-artifacts").exists()
    assert not (tmp_path / "intruder-exports").exists()

    assert run.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert table_hashes(warehouse) == table_hashes(built_warehouse)
    exports = tree_digest(tmp_path / "exports")
    assert any(name.endswith(".jsonl") for name in exports)
    assert exports == tree_digest(first / "exports")
    assert tree_digest(tmp_path / "artifacts") == tree_digest(first / "artifacts")


# --------------------------------------------------------------------------------------------
# privacy and containment
# --------------------------------------------------------------------------------------------
RAW_EMAILS = {
    "profile_email_namespace": "Pii.Profile.One@example.com",
    "profile_personal_email": "pii.profile.two@Example.org",
    "profile_unhashed_in_hash_namespace": "pii.profile.three@example.net",
    "event_email_namespace": "Pii.Event.One@example.com",
    "event_unhashed_in_hash_namespace": "pii.event.two@example.com",
    "event_url_query": "pii.event.three@example.com",
    "event_page_name": "pii.event.four@example.com",
    "event_only_a_raw_email": "pii.event.five@example.com",
    "event_email_as_crmid": "pii.event.six@example.com",
}


def _inject_raw_emails(raw: Path) -> None:
    """Add records that carry raw e-mail addresses everywhere a careless export might."""
    (events_file,) = sorted((raw / "events").glob("*.jsonl"))
    template = json.loads(events_file.read_text().splitlines()[0])
    crm = "CRM-PII-000001"

    def event(_id: str, identity_map: dict, **web) -> dict:
        record = json.loads(json.dumps(template))
        record["_id"] = _id
        record["eventType"] = "commerce.purchases"
        record["commerce"] = {"order": {"priceTotal": 42.5, "currencyCode": "USD"}}
        record["identityMap"] = identity_map
        if web:
            record["web"] = {"webPageDetails": web}
        return record

    primary = [{"id": crm, "authenticatedState": "authenticated", "primary": True}]
    new_events = [
        event("pii-1", {"CRMID": primary, "Email": [{"id": RAW_EMAILS["event_email_namespace"]}]}),
        event(
            "pii-2",
            {
                "CRMID": primary,
                "Email_LC_SHA256": [{"id": RAW_EMAILS["event_unhashed_in_hash_namespace"]}],
            },
        ),
        event(
            "pii-3",
            {"CRMID": primary},
            URL=f"https://shop.example.com/account?email={RAW_EMAILS['event_url_query']}",
            name=f"account|{RAW_EMAILS['event_page_name']}",
        ),
        event("pii-4", {"Email": [{"id": RAW_EMAILS["event_only_a_raw_email"], "primary": True}]}),
        event(
            "pii-5",
            {"CRMID": [{"id": RAW_EMAILS["event_email_as_crmid"], "primary": True}]},
        ),
    ]
    with events_file.open("a") as fh:
        for record in new_events:
            fh.write(json.dumps(record) + "\n")
    (profiles_file,) = sorted((raw / "profiles").glob("*.jsonl"))
    profile = {
        "_id": "pii-profile",
        "identityMap": {
            "CRMID": primary,
            "Email": [{"id": RAW_EMAILS["profile_email_namespace"]}],
            "Email_LC_SHA256": [{"id": RAW_EMAILS["profile_unhashed_in_hash_namespace"]}],
        },
        "personalEmail": {"address": RAW_EMAILS["profile_personal_email"]},
    }
    with profiles_file.open("a") as fh:
        fh.write(json.dumps(profile) + "\n")


def _files(root: Path) -> dict[str, float]:
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def private_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One full run from a copy of the project, every output folder configured into `out/`,
    HOME pointing at an empty folder, on generated data plus records with raw e-mails."""
    work = tmp_path_factory.mktemp("private")
    raw = work / "raw"
    generated = run_cli(
        "generate", "--customers", "300", "--days", "400", "--seed", "5",
        "--format", "jsonl", "--out", str(raw),
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    _inject_raw_emails(raw)
    project = copy_project(work / "project")
    out, home = work / "out", work / "home"
    home.mkdir()
    before = _files(project)
    env = _env(
        {
            "HOME": str(home),
            "PE_PROJECT_DIR": str(project),
            "PE_WAREHOUSE": str(out / "warehouse.duckdb"),
            "PE_ARTIFACTS_DIR": str(out / "artifacts"),
            "PE_EXPORT_DIR": str(out / "exports"),
            "PE_REPORT_DIR": str(out / "reports"),
            "DBT_TARGET_PATH": str(out / "target"),
            "DBT_LOG_PATH": str(out / "logs"),
        }
    )
    proc = subprocess.run(
        [str(BIN_DIR / "profile-enrichment"), "run", "--raw", str(raw)],
        cwd=project,
        env=env,
        capture_output=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:].decode(errors="replace")
    truth = duckdb.sql(f"select email from '{raw}/ground_truth/customers.parquet'")
    generator_emails = {row[0].lower() for row in truth.fetchall() if row[0]}
    assert len(generator_emails) > 100  # the generator's registered people
    return {
        "raw": raw,
        "out": out,
        "home": home,
        "project": project,
        "before": before,
        "console": proc.stdout + proc.stderr,
        "known_emails": generator_emails | {e.lower() for e in RAW_EMAILS.values()},
    }


def test_no_raw_email_reaches_any_output_log_or_the_console(private_run: dict) -> None:
    out: Path = private_run["out"]
    scanned = {"<console>": private_run["console"]}
    for path in out.rglob("*"):
        if path.is_file() and not path.name.startswith("warehouse.duckdb"):
            scanned[str(path.relative_to(out))] = path.read_bytes()
    assert any(name.startswith("exports/batch-") for name in scanned)
    assert any(name.startswith("logs/") for name in scanned)
    leaks = {}
    for name, blob in scanned.items():
        found = {m.decode("latin-1").lower() for m in EMAIL.findall(blob)}
        # The project's own contact addresses (dbt group owners) use the reserved .invalid
        # top-level domain, which no person's address can have.
        found = {m for m in found if not m.endswith(".invalid")}
        known = {e for e in private_run["known_emails"] if e.encode() in blob.lower()}
        if found | known:
            leaks[name] = sorted(found | known)[:5]
    assert leaks == {}, f"raw e-mail addresses found in outputs: {leaks}"


def test_the_run_writes_only_into_its_configured_folders(private_run: dict) -> None:
    project: Path = private_run["project"]
    after = _files(project)
    assert after == private_run["before"], (
        f"the run changed the project folder: {sorted(set(after) ^ set(private_run['before']))}"
    )
    # Only matplotlib's font cache (built once per user, as for any matplotlib program).
    home = private_run["home"]
    home_files = [
        str(p.relative_to(home))
        for p in home.rglob("*")
        if p.is_file() and p.relative_to(home).parts[:2] != (".cache", "matplotlib")
    ]
    assert home_files == [], home_files
    top = sorted(p.name for p in private_run["out"].iterdir())
    assert {"warehouse.duckdb", "artifacts", "exports", "target", "logs"} <= set(top), top
    assert_batches_complete(private_run["out"] / "exports")


def test_events_with_raw_emails_are_accepted_or_quarantined_never_lost(private_run: dict) -> None:
    """Nothing is silently dropped: every injected event is accepted or quarantined."""
    con = duckdb.connect(str(private_run["out"] / "warehouse.duckdb"), read_only=True)
    try:
        rows = dict(
            con.sql(
                "select event_id, reason_code from rejected_events where event_id like 'pii-%'"
            ).fetchall()
        )
        accepted = {
            row[0]
            for row in con.sql(
                "select event_id from stg_aep__experience_events where event_id like 'pii-%'"
            ).fetchall()
        }
    finally:
        con.close()
    assert set(rows) | accepted == {"pii-1", "pii-2", "pii-3", "pii-4", "pii-5"}
    # A raw address is never an identity: alone, the event has none it may use.
    assert rows == {"pii-4": "no_usable_identity", "pii-5": "no_usable_identity"}


# --------------------------------------------------------------------------------------------
# credentials
# --------------------------------------------------------------------------------------------
def test_failed_uploads_never_show_credentials(built_warehouse: Path, tmp_path: Path) -> None:
    from test_upload import CLIENT_ID, CLIENT_SECRET, env_for, start_fake_aep

    out = tmp_path / "exports"
    exported = run_cli("export", "--warehouse", str(built_warehouse), "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    (batch,) = sorted(out.glob("batch-*"))
    server = start_fake_aep()
    secrets = [CLIENT_ID, CLIENT_SECRET, CLIENT_SECRET + "-wrong"]
    try:
        wrong = env_for(server) | {"PE_AEP_CLIENT_SECRET": CLIENT_SECRET + "-wrong"}
        bad_secret = run_cli("upload", str(batch), env=wrong)
        server.inject(
            "create_batch",
            400,
            body={"title": f"client {CLIENT_ID} secret {CLIENT_SECRET}", "detail": "no"},
        )
        echoed = run_cli("upload", str(batch), env=env_for(server))
        next_token = f"fake-access-token-{server.tokens_issued + 1}-s3cr3t"  # the next run's
        server.inject("put_file", 403, body={"title": f"token {next_token} {CLIENT_SECRET}"})
        refused = run_cli("upload", str(batch), env=env_for(server))
        issued = server.tokens_issued
    finally:
        server.stop()
    for result in (bad_secret, echoed, refused):
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    console = "".join(r.stdout + r.stderr for r in (bad_secret, echoed, refused))
    files = "".join(p.read_text(errors="replace") for p in batch.iterdir() if p.is_file())
    secrets += [f"fake-access-token-{n}-s3cr3t" for n in range(1, issued + 1)]
    assert issued >= 2  # the runs with good credentials did get tokens
    for secret in secrets:
        assert secret not in console and secret not in files, secret
    assert "PE_AEP_CLIENT_SECRET" in bad_secret.stderr  # the hint names the variable to fix
    assert "***" in echoed.stderr  # the echoed secret was there, and was masked


def test_credentials_come_only_from_the_environment() -> None:
    help_text = run_cli("upload", "--help").stdout
    assert "PE_AEP_CLIENT_SECRET" in help_text
    assert not re.search(r"--[a-z-]*(secret|token|password|client-id)", help_text), help_text


# --------------------------------------------------------------------------------------------
# vars that reach SQL
# --------------------------------------------------------------------------------------------
INJECTION = "2024-01-01'; drop table customer_features; --"


@pytest.mark.parametrize(
    ("var", "value", "select"),
    [
        ("as_of_date", INJECTION, "int_run_as_of_date"),
        ("ingestion_clock", INJECTION, "int_events_validated"),
        ("currency_code", "USD' or '1'='1", "int_events_validated"),
        ("raw_dir", "/tmp/x'; drop table x; --", "stg_aep__experience_events"),
        ("late_arrival_lookback_days", "3; drop table x", "int_identity_daily_activity"),
        ("feature_windows_days", "[7, 30); drop table x; --]", "customer_features"),
    ],
)
def test_vars_that_reach_sql_refuse_injection(
    var: str, value: str, select: str, tmp_path: Path
) -> None:
    dbt_vars = {"raw_dir": "/nonexistent", "raw_format": "jsonl", "raw_profiles": False}
    dbt_vars[var] = value
    result = run_dbt(
        "compile",
        "--target",
        "ci",
        "--select",
        select,
        "--target-path",
        str(tmp_path / "target"),
        "--log-path",
        str(tmp_path / "logs"),
        dbt_vars=dbt_vars,
        timeout=300,
    )
    assert result.returncode != 0, f"{var}={value!r} compiled"
    assert "Traceback" not in result.stdout + result.stderr
    assert f"var '{var}'" in result.stdout, result.stdout[-2000:]
    compiled = list((tmp_path / "target").rglob("*.sql"))
    assert not any("drop table" in p.read_text() for p in compiled)


@pytest.mark.parametrize("tenant", ["../../etc", "acme'; drop table x; --", "/abs/path"])
def test_export_refuses_a_tenant_id_that_could_escape(
    built_warehouse: Path, tenant: str, tmp_path: Path
) -> None:
    """The tenant id names the record's root field; it never reaches SQL or a path."""
    out = tmp_path / "exports"
    result = run_cli(
        "export", "--warehouse", str(built_warehouse), "--out", str(out), "--tenant", tenant
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: invalid tenant id")
    assert not out.exists() or not any(out.rglob("*.jsonl"))


def test_the_cli_refuses_an_injected_as_of_date(tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "events"
    raw.mkdir(parents=True)
    (raw / "e.jsonl").write_text('{"_id": "x"}\n')
    result = run_cli("run", "--raw", str(raw.parent), "--as-of", INJECTION, "--target", "ci")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "--as-of" in result.stderr
