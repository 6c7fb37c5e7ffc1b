"""The `profile-enrichment` command line.

Every user mistake becomes one line on stderr and exit code 2; a failed dbt run exits 1 with
a short list of what failed. Heavy imports happen inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from profile_enrichment import __version__
from profile_enrichment.errors import UserError
from profile_enrichment.progress import counter, status

EPILOG_MAIN = """\
examples:
  profile-enrichment generate --customers 5000 --days 730 --seed 7 --out data/raw
  profile-enrichment import-transactions orders.csv --out data/raw \\
      --customer-col customer_id --date-col order_date --amount-col amount
  profile-enrichment run --raw data/raw
  profile-enrichment run --raw data/raw --as-of 2025-06-01 --warehouse /tmp/backtest.duckdb
  profile-enrichment run --raw data/raw --if-changed     # nightly: skip when nothing changed
  profile-enrichment export --tenant acme --out data/exports
  profile-enrichment validate data/exports/batch-<id>
  profile-enrichment upload data/exports/batch-<id>      # PE_AEP_* credentials from the env
  profile-enrichment report                               # data/reports/index.html
  profile-enrichment bench --customers 20000              # quick benchmark (default ~1M)
  profile-enrichment load-raw --raw data/raw              # PostgreSQL: PE_PG_* variables

Settings also come from environment variables (PE_RAW_DIR, PE_WAREHOUSE, PE_AS_OF_DATE,
PE_TARGET, PE_TENANT_ID, PE_ARTIFACTS_DIR, PE_EXPORT_DIR; PE_PG_* for the postgres target,
PE_SPARK_DIR for spark) or dbt vars, so `dbt build` behaves the same.
"""


TARGETS = ("dev", "ci", "postgres", "spark")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from err
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from err
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def _parse_date(text: str):
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from err


# --------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------
def cmd_generate(args: argparse.Namespace) -> int:
    from profile_enrichment.generate import generate

    out = Path(args.out)
    if args.if_changed and _generator_args_match(out, args):
        print(f"demo data in {out} is up to date (same arguments); not regenerating")
        return 0
    started = time.perf_counter()
    with counter("generating people", "people") as update:
        summary = generate(
            customers=args.customers,
            days=args.days,
            seed=args.seed,
            out_dir=out,
            fmt=args.format,
            start_date=args.start_date,
            activity_scale=args.activity_scale,
            progress=update,
        )
    seconds = time.perf_counter() - started
    print(
        f"generated {summary.events:,} events for {summary.customers:,} people "
        f"({summary.purchases:,} purchases) in {seconds:.1f}s -> {out}"
    )
    return 0


def _generator_args_match(out: Path, args: argparse.Namespace) -> bool:
    meta = out / "_generator.json"
    if not meta.exists():
        return False
    try:
        recorded = json.loads(meta.read_text()).get("arguments", {})
    except (OSError, json.JSONDecodeError):
        return False
    wanted = {
        "customers": args.customers,
        "days": args.days,
        "seed": args.seed,
        "fmt": args.format,
        "start_date": args.start_date.isoformat(),
    }
    same = all(str(recorded.get(k)) == str(v) for k, v in wanted.items())
    return same and float(recorded.get("activity_scale", 1.0)) == args.activity_scale


# --------------------------------------------------------------------------------------------
# import-transactions
# --------------------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    from profile_enrichment.importer import import_transactions

    path = Path(args.file)
    if not path.exists():
        raise UserError(f"file not found: {path}")
    summary = import_transactions(
        path,
        Path(args.out),
        customer_col=args.customer_col,
        date_col=args.date_col,
        amount_col=args.amount_col,
        order_col=args.order_col,
        quantity_col=args.quantity_col,
        sku_col=args.sku_col,
        category_col=args.category_col,
        currency_col=args.currency_col,
        currency=args.currency,
        date_format=args.date_format,
        fmt=args.format,
        delimiter=args.delimiter,
        column_names=[c.strip() for c in args.column_names.split(",")]
        if args.column_names
        else None,
    )
    print(
        f"read {summary.rows_read:,} rows: imported {summary.rows_imported:,} "
        f"as {summary.orders:,} orders, rejected {summary.rows_rejected:,}"
    )
    if summary.rows_rejected:
        print(f"rejected rows and reasons: {summary.rejects_path}")
    return 0


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from profile_enrichment.project import (
        check_warehouse_free,
        find_project_dir,
        inspect_raw_dir,
        parse_as_of,
    )

    project_dir = find_project_dir()
    target = args.target or os.environ.get("PE_TARGET", "dev")
    if target not in TARGETS:
        raise UserError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    raw = _resolve(project_dir, args.raw or os.environ.get("PE_RAW_DIR", "data/raw"))
    raw_input = inspect_raw_dir(raw)
    as_of = parse_as_of(args.as_of if args.as_of is not None else os.environ.get("PE_AS_OF_DATE"))

    env = {"PE_TARGET": target}
    warehouse = None
    new_warehouse = False
    if target == "dev":
        warehouse = _resolve(
            project_dir, args.warehouse or os.environ.get("PE_WAREHOUSE", "data/warehouse.duckdb")
        )
        new_warehouse = not warehouse.exists()  # the probe below creates the file
        check_warehouse_free(warehouse)
        env["PE_WAREHOUSE"] = str(warehouse)
    runner = None
    default_artifacts = "data/artifacts" if target == "dev" else "data/ci/artifacts"
    if target == "spark":
        from profile_enrichment.engines import local_spark

        local_spark.check_spark()
        spark_dir = local_spark.spark_dir(project_dir)
        env["PE_SPARK_DIR"] = str(spark_dir)
        runner = local_spark.dbt_runner()
        # Champions trained on Spark get a registry of their own beside its warehouse.
        default_artifacts = str(spark_dir / "artifacts")
    artifacts = _resolve(
        project_dir, args.artifacts or os.environ.get("PE_ARTIFACTS_DIR", default_artifacts)
    )
    dbt_vars = {
        "artifacts_dir": str(artifacts),
        "raw_dir": str(raw),
        "raw_format": raw_input.format,
        "raw_profiles": raw_input.has_profiles,
        "as_of_date": as_of or "",
    }
    command = ["build", "--target", target]
    if args.full_refresh:
        command.append("--full-refresh")
    if args.select and args.selector:
        raise UserError("--select and --selector cannot be combined", hint="pick one")
    if target == "postgres":
        _load_postgres(raw_input, artifacts)
        if not args.select and not args.selector:  # no dbt Python models: the SQL layer
            args.selector = "sql_layer"
    if args.selector:
        command += ["--selector", args.selector]
    if args.select:
        # Only tests whose every parent is selected: otherwise dbt's default (eager) test
        # selection pulls in tests of models this run does not build.
        command += ["--select", args.select, "--indirect-selection", "buildable"]
    result, unchanged = _build_unless_unchanged(
        args, project_dir, raw, command, dbt_vars, env, warehouse, artifacts, runner, new_warehouse
    )
    if result.locked:
        raise UserError(
            f"another run holds the warehouse {warehouse}",
            hint="wait for it to finish, or close the program that has the file open",
        )
    _print_summary(result.summary, raw_input, warehouse, target, env.get("PE_SPARK_DIR"))
    if result.returncode == 0:
        _check_as_of_sees_data(result.summary)
    if result.returncode == 0 and target == "dev" and not args.select and not args.selector:
        out = _resolve(project_dir, os.environ.get("PE_EXPORT_DIR", "data/exports"))
        code = 0
        if not args.no_export:
            code = _export_after_run(project_dir, warehouse, out, unchanged)
        if not args.no_report:
            _report(project_dir, warehouse, _default_report_path(warehouse), out)
        return code
    if result.returncode != 0:
        print(f"dbt build failed (exit {result.returncode}):", file=sys.stderr)
        hint = (
            "rerun without --quiet to see dbt's output"
            if args.quiet
            else "see the dbt output above"
        )
        for failure in result.failures[:20] or [hint]:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    return 0


def _load_postgres(raw_input, artifacts: Path | None = None) -> None:
    """PostgreSQL cannot read the files in place, nor run Python models: load the files, and
    (with an artifacts folder) the champions compiled to SQL (see engines.raw_load)."""
    from profile_enrichment.engines.raw_load import (
        PostgresConnection,
        load_compiled_scoring,
        load_postgres,
    )

    connection = PostgresConnection.from_env()
    with status(f"loading {raw_input.root} into PostgreSQL"):
        loaded = load_postgres(raw_input, connection)
    for table, rows in loaded.items():
        print(f"loaded:      aep.{table}, {rows:,} records ({connection.host}:{connection.port})")
    if artifacts is None:
        return
    schema = os.environ.get("PE_PG_SCHEMA", "main")
    champions = load_compiled_scoring(artifacts, connection, schema)
    for name, version in champions:
        print(f"loaded:      {name} champion {version}, compiled to SQL ({schema}.ml_scoring_sql)")
    if not champions:
        print(
            f"note:        no propensity champion in {artifacts}: propensity_scores_in_sql stays "
            "empty (train where Python runs first, e.g. profile-enrichment run, with this --artifacts)"
        )


def _build_unless_unchanged(
    args,
    project_dir,
    raw,
    command,
    dbt_vars,
    env,
    warehouse,
    artifacts,
    runner=None,
    new_warehouse=False,
):
    """`dbt build`, or, with --if-changed and nothing changed since the last successful build
    (see profile_enrichment.run_state), the last build's summary without running dbt.
    Returns (result, the recorded state when dbt was skipped, else None)."""
    from profile_enrichment import run_state
    from profile_enrichment.project import DbtResult, run_dbt

    recordable = warehouse is not None and not args.select and not args.selector
    current = None
    if warehouse is not None:  # read once: the --if-changed skip and the staging decision
        current = run_state.fingerprint(project_dir, raw, command, dbt_vars, artifacts)
    if recordable and args.if_changed:
        state = run_state.unchanged_since_last_run(warehouse, current)
        if state is not None:
            print(
                "nothing changed since the last successful build (inputs, code, settings): "
                "dbt build skipped; drop --if-changed to rebuild anyway"
            )
            return DbtResult(0, [], state.get("summary")), state
    build_vars = dict(dbt_vars)
    if warehouse is not None and "--full-refresh" not in command:
        # DuckDB stages raw files incrementally, by name; anything else than new files
        # arriving re-stages them all (run_state.staging_rebuild_reason).
        reason = run_state.staging_rebuild_reason(warehouse, current)
        if reason is not None:
            build_vars["rebuild_staging"] = True
            if not new_warehouse:
                print(f"staging:     every raw file is parsed again ({reason})")
    result = run_dbt(project_dir, command, build_vars, env, quiet=args.quiet, runner=runner)
    if recordable and result.returncode == 0:
        run_state.record_run(
            warehouse, project_dir, raw, command, dbt_vars, artifacts, result.summary
        )
    elif warehouse is not None:
        run_state.state_path(warehouse).unlink(missing_ok=True)
    return result, None


def _export_after_run(project_dir: Path, warehouse: Path, out: Path, unchanged) -> int:
    """The export of a run; when dbt was skipped as unchanged, the last export is reused as
    long as its batches are intact (same warehouse, same records: nothing to rebuild)."""
    from profile_enrichment import run_state

    tenant = _tenant(None)
    if unchanged is not None:
        batches = run_state.previous_export(unchanged, out, tenant)
        if batches:
            for batch in batches:
                print(f"export:      unchanged, reused {batch} (checksums verified)")
            return 0
    code, batches = _export_batches(project_dir, warehouse, out, tenant, "jsonl", None, 0)
    if code == 0:
        run_state.record_export(warehouse, out, tenant, batches)
    return code


def _check_as_of_sees_data(summary: dict | None) -> None:
    """An as-of date on or before the first accepted event leaves every feature empty: the
    build is valid (empty outputs), but scoring and exporting nothing is a mistake to report."""
    as_of = (summary or {}).get("as_of_date")
    first = (summary or {}).get("first_event_date")
    if as_of and first and as_of <= first:
        raise UserError(
            f"the as-of date {as_of} is not after the first accepted event ({first}): "
            "no customer has features, so nothing was scored or exported",
            hint="pass a later --as-of (features see only days before it)",
        )


def _resolve(project_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (project_dir / path)


def _print_summary(
    summary: dict | None,
    raw_input,
    warehouse: Path | None,
    target: str = "dev",
    spark_dir: str | None = None,
) -> None:
    print()
    print(f"raw input:   {raw_input.root} ({raw_input.format}, {len(raw_input.event_files)} files)")
    if summary:
        print(
            f"events:      {summary['records_read']:,} read, {summary['accepted']:,} accepted, "
            f"{summary['quarantined']:,} quarantined"
        )
        for reason, count in summary.get("quarantine_reasons", {}).items():
            print(f"             - {reason}: {count:,}")
        if summary["accepted"] == 0:
            print(
                "warning:     no event was accepted, so nothing was scored "
                "(see the reasons above and the rejected_events table)"
            )
        if summary.get("as_of_date"):
            print(f"as-of date:  {summary['as_of_date']}")
    if warehouse:
        where = str(warehouse)
    elif target == "postgres":
        from profile_enrichment.engines.raw_load import PostgresConnection

        pg = PostgresConnection.from_env()
        where = f"PostgreSQL {pg.host}:{pg.port}/{pg.dbname} (the SQL layer; no export, no report)"
    elif target == "spark":
        where = f"Spark, {spark_dir} (no export, no report)"
    else:
        where = "in memory (target ci)"
    print(f"warehouse:   {where}")


# --------------------------------------------------------------------------------------------
# export / validate
# --------------------------------------------------------------------------------------------
def _export(
    project_dir: Path,
    warehouse: Path,
    out: Path,
    tenant: str,
    fmt: str,
    max_file_mb: float | None,
    allow_rejects: int,
    workers: int | None = None,
) -> int:
    return _export_batches(
        project_dir, warehouse, out, tenant, fmt, max_file_mb, allow_rejects, workers
    )[0]


def _export_batches(
    project_dir: Path,
    warehouse: Path,
    out: Path,
    tenant: str,
    fmt: str,
    max_file_mb: float | None,
    allow_rejects: int,
    workers: int | None = None,
) -> tuple[int, list[Path]]:
    """Export and print the outcome; returns (exit code, batch folders)."""
    from profile_enrichment.export.pipeline import export_profiles

    max_bytes = None if max_file_mb is None else int(max_file_mb * 1024 * 1024)
    if workers is None and os.environ.get("PE_EXPORT_WORKERS"):
        try:
            workers = _positive_int(os.environ["PE_EXPORT_WORKERS"])
        except argparse.ArgumentTypeError as err:
            raise UserError(f"PE_EXPORT_WORKERS: {err}") from None
    with status("exporting XDM profile records"):
        result = export_profiles(
            warehouse, out, tenant=tenant, fmt=fmt, max_file_bytes=max_bytes, workers=workers
        )
    print(
        f"export:      {result.records:,} profile records as of {result.as_of_date}, "
        f"{len(result.batches)} batch(es), {result.rejects:,} rejected"
    )
    for batch in result.batches:
        state = "unchanged" if batch.reused else "written"
        print(
            f"             {batch.path} ({len(batch.files)} files, {batch.bytes:,} bytes, {state})"
        )
    print(f"payloads:    {result.payload_dir} (fieldgroup.json, schema.json, dataset.json)")
    if result.rejects > allow_rejects:
        print(
            f"error: {result.rejects} record(s) failed validation and were not written "
            f"(see rejects.jsonl in the batch folder; --allow-rejects N tolerates N)",
            file=sys.stderr,
        )
        return 1, []
    return 0, [batch.path for batch in result.batches]


def _tenant(value: str | None) -> str:
    return value or os.environ.get("PE_TENANT_ID", "profileenrichment")


def cmd_export(args: argparse.Namespace) -> int:
    from profile_enrichment.project import claim_run_lock, find_project_dir

    project_dir = find_project_dir()
    warehouse = _resolve(
        project_dir, args.warehouse or os.environ.get("PE_WAREHOUSE", "data/warehouse.duckdb")
    )
    if warehouse.is_file():
        claim_run_lock(warehouse)  # never export a warehouse that a run is rewriting
    out = _resolve(project_dir, args.out or os.environ.get("PE_EXPORT_DIR", "data/exports"))
    return _export(
        project_dir,
        warehouse,
        out,
        _tenant(args.tenant),
        args.format,
        args.max_file_mb,
        args.allow_rejects,
        args.workers,
    )


def cmd_validate(args: argparse.Namespace) -> int:
    from profile_enrichment.export.batches import validate_batch

    batch = Path(args.batch_dir)
    if not (batch / "manifest.json").is_file():
        raise UserError(f"{batch} is not a batch folder (no manifest.json)")
    problems = validate_batch(batch)
    if problems:
        for problem in problems[:50]:
            print(f"  - {problem}", file=sys.stderr)
        print(f"error: {batch} has {len(problems)} problem(s)", file=sys.stderr)
        return 1
    manifest = json.loads((batch / "manifest.json").read_text())
    print(
        f"{batch}: valid ({manifest.get('recordCount', 0):,} records, "
        f"{len(manifest.get('files', []))} files; checksums, counts and schema checked)"
    )
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    from profile_enrichment.export.upload import upload_batch

    batch = Path(args.batch_dir)
    if not (batch / "manifest.json").is_file():
        raise UserError(f"{batch} is not a batch folder (no manifest.json)")
    with status(f"uploading {batch.name} to AEP"):
        result = upload_batch(batch, poll_interval=args.poll_interval)
    print(result.summary())
    return 0


# --------------------------------------------------------------------------------------------
# load-raw (engines that cannot read files in place)
# --------------------------------------------------------------------------------------------
def cmd_load_raw(args: argparse.Namespace) -> int:
    from profile_enrichment.project import find_project_dir, inspect_raw_dir

    project_dir = find_project_dir()
    raw = _resolve(project_dir, args.raw or os.environ.get("PE_RAW_DIR", "data/raw"))
    _load_postgres(inspect_raw_dir(raw))
    return 0


# --------------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    import re

    from profile_enrichment.bench.harness import DEFAULT_MEMORY_LIMIT, run_bench
    from profile_enrichment.project import find_project_dir

    project_dir = find_project_dir()
    if args.days < 7:
        raise UserError(f"--days must be at least 7, got {args.days}")
    memory_limit = (
        args.memory_limit or os.environ.get("PE_DUCKDB_MEMORY_LIMIT") or DEFAULT_MEMORY_LIMIT
    )
    if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB|%)", memory_limit, re.I):
        raise UserError(f"--memory-limit must look like 8GB or 50%, got {memory_limit!r}")
    _, path = run_bench(
        customers=args.customers,
        days=args.days,
        seed=args.seed,
        activity_scale=args.activity_scale,
        data_dir=_resolve(project_dir, args.data_dir),
        results_dir=_resolve(project_dir, args.results_dir),
        project_dir=project_dir,
        memory_limit=memory_limit,
        engines=tuple(e.strip() for e in (args.engines or "").split(",") if e.strip()),
        stop_after=args.stop_after,
        resume=args.resume,
    )
    print()
    print(path.with_suffix(".md").read_text())
    print(f"results: {path} (+ .md)")
    return 0


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _default_report_path(warehouse: Path) -> Path:
    """reports/index.html beside the warehouse: data/reports/index.html by default."""
    return warehouse.parent / "reports" / "index.html"


def _project_var(project_dir: Path, name: str, default: float) -> float:
    import yaml

    try:
        project = yaml.safe_load((project_dir / "dbt_project.yml").read_text()) or {}
        return float((project.get("vars") or {}).get(name, default))
    except (OSError, yaml.YAMLError, TypeError, ValueError):
        return default


def _report(project_dir: Path, warehouse: Path, out: Path, export_dir: Path | None) -> None:
    from profile_enrichment.report import build_report

    result = build_report(
        warehouse,
        out,
        export_dir=export_dir,
        drift_threshold=_project_var(project_dir, "drift_psi_threshold", 0.2),
    )
    print(
        f"report:      {result.path} ({result.charts} charts, {result.bytes / 1e6:.1f} MB, "
        f"{result.seconds:.1f}s)"
    )


def cmd_report(args: argparse.Namespace) -> int:
    from profile_enrichment.project import find_project_dir

    project_dir = find_project_dir()
    warehouse = _resolve(
        project_dir, args.warehouse or os.environ.get("PE_WAREHOUSE", "data/warehouse.duckdb")
    )
    out = _resolve(project_dir, args.out) if args.out else _default_report_path(warehouse)
    exports = _resolve(project_dir, args.exports or os.environ.get("PE_EXPORT_DIR", "data/exports"))
    _report(project_dir, warehouse, out, exports)
    return 0


# --------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="profile-enrichment",
        description="Open, local-first profile enrichment for Adobe Experience Platform.",
        epilog=EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gen = sub.add_parser(
        "generate",
        help="write synthetic XDM events with a known ground truth",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  profile-enrichment generate --customers 2000 --days 365 --seed 7 --out data/raw",
    )
    gen.add_argument("--customers", type=_positive_int, default=5000, help="people to simulate")
    gen.add_argument("--days", type=_positive_int, default=730, help="length of the history")
    gen.add_argument("--seed", type=int, default=7, help="random seed (same seed, same bytes)")
    gen.add_argument("--out", required=True, help="output folder (events/, profiles/, ...)")
    gen.add_argument("--format", choices=["parquet", "jsonl"], default="parquet")
    gen.add_argument(
        "--start-date", type=_parse_date, default=_parse_date("2024-01-01"), help="first day"
    )
    gen.add_argument(
        "--activity-scale",
        type=_positive_float,
        default=1.0,
        help="events per person relative to the default (~130 over 2 years); bench uses 0.065",
    )
    gen.add_argument(
        "--if-changed", action="store_true", help="skip when OUT already holds the same data"
    )
    gen.set_defaults(func=cmd_generate)

    imp = sub.add_parser(
        "import-transactions",
        help="turn a CSV or Parquet of orders into XDM purchase events",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  profile-enrichment import-transactions orders.csv --out data/raw \\\n"
            "      --customer-col customer_id --date-col order_date --amount-col amount\n"
            "  profile-enrichment import-transactions CDNOW_master.txt --out data/cdnow \\\n"
            "      --delimiter whitespace --column-names customer_id,date,quantity,amount \\\n"
            "      --customer-col customer_id --date-col date --quantity-col quantity \\\n"
            "      --amount-col amount --date-format %Y%m%d"
        ),
    )
    imp.add_argument("file", help="CSV (comma, semicolon or tab) or Parquet file")
    imp.add_argument("--out", required=True, help="output folder; events go to OUT/events/")
    imp.add_argument("--customer-col", required=True, help="column with the customer id (CRMID)")
    imp.add_argument("--date-col", required=True, help="column with the order date or timestamp")
    imp.add_argument("--amount-col", required=True, help="column with the order or line amount")
    imp.add_argument("--order-col", help="order id column (rows sharing it form one order)")
    imp.add_argument("--quantity-col", help="quantity column")
    imp.add_argument("--sku-col", help="product SKU column")
    imp.add_argument("--category-col", help="product category column")
    imp.add_argument("--currency-col", help="currency code column")
    imp.add_argument("--currency", default="USD", help="currency when there is no column")
    imp.add_argument("--date-format", help="strptime format, e.g. %%Y%%m%%d (default: ISO 8601)")
    imp.add_argument(
        "--delimiter",
        choices=[",", ";", "\t", "whitespace"],
        help="field separator (default: sniffed from the first line)",
    )
    imp.add_argument(
        "--column-names",
        help="comma-separated names for a file without a header row, e.g. customer_id,date,quantity,amount",
    )
    imp.add_argument("--format", choices=["parquet", "jsonl"], default="parquet")
    imp.set_defaults(func=cmd_import)

    run = sub.add_parser(
        "run",
        help="build the pipeline (dbt build) on a raw folder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  profile-enrichment run --raw data/raw\n"
            "  profile-enrichment run --raw data/raw --as-of 2025-06-01\n"
            "  profile-enrichment run --raw data/raw --target ci    # in memory, nothing kept\n"
            "  profile-enrichment run --raw data/raw --target postgres   # PE_PG_* variables\n"
            "  profile-enrichment run --raw data/raw --target spark      # local Spark, PE_SPARK_DIR"
        ),
    )
    run.add_argument("--raw", help="folder with events/ (env PE_RAW_DIR; default data/raw)")
    run.add_argument(
        "--warehouse", help="DuckDB file (env PE_WAREHOUSE; default data/warehouse.duckdb)"
    )
    run.add_argument(
        "--as-of", help="as-of date YYYY-MM-DD (env PE_AS_OF_DATE; default: newest event + 1 day)"
    )
    run.add_argument(
        "--target",
        choices=TARGETS,
        help="dbt target (env PE_TARGET; default dev). postgres loads the raw files into the"
        " server (PE_PG_* variables), then builds the SQL layer there; spark builds everything"
        " in a local Spark session (PE_SPARK_DIR; the spark extra and Java). Neither exports"
        " nor writes the report",
    )
    run.add_argument(
        "--artifacts",
        help="model registry folder (env PE_ARTIFACTS_DIR; default data/artifacts,"
        " data/ci/artifacts for ci and postgres, <PE_SPARK_DIR>/artifacts for spark)",
    )
    run.add_argument(
        "--full-refresh", action="store_true", help="rebuild incremental models from scratch"
    )
    run.add_argument("--select", help="dbt node selection, e.g. 'tag:features'")
    run.add_argument(
        "--selector",
        help="a named selection from selectors.yml, e.g. sql_layer (no export, no report)",
    )
    run.add_argument(
        "--if-changed",
        action="store_true",
        help="skip dbt when raw files, code and settings are the same as at the last successful build",
    )
    run.add_argument("--quiet", action="store_true", help="hide dbt's own output")
    run.add_argument(
        "--no-export", action="store_true", help="skip the XDM export after the build (dev target)"
    )
    run.add_argument(
        "--no-report",
        action="store_true",
        help="skip the HTML model report after the build (dev target)",
    )
    run.set_defaults(func=cmd_run)

    exp = sub.add_parser(
        "export",
        help="write XDM profile batches and the schema/dataset payloads",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  profile-enrichment export\n"
            "  profile-enrichment export --tenant acme --format parquet --out /tmp/exports"
        ),
    )
    exp.add_argument(
        "--warehouse", help="DuckDB file (env PE_WAREHOUSE; default data/warehouse.duckdb)"
    )
    exp.add_argument("--out", help="output folder (env PE_EXPORT_DIR; default data/exports)")
    exp.add_argument("--tenant", help="AEP tenant id (env PE_TENANT_ID; default profileenrichment)")
    exp.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    exp.add_argument("--max-file-mb", type=float, help="split files above this size (default 256)")
    exp.add_argument(
        "--allow-rejects", type=int, default=0, help="exit 0 with up to N invalid records"
    )
    exp.add_argument(
        "--workers",
        type=_positive_int,
        help="processes that build and validate the records (env PE_EXPORT_WORKERS; default: "
        "one per core from 50,000 records on, else 1); any number writes the same bytes",
    )
    exp.set_defaults(func=cmd_export)

    val = sub.add_parser(
        "validate",
        help="re-validate a written batch: checksums, counts, schema",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  profile-enrichment validate data/exports/batch-<id>",
    )
    val.add_argument("batch_dir", help="a batch folder with manifest.json")
    val.set_defaults(func=cmd_validate)

    upl = sub.add_parser(
        "upload",
        help="send a batch to AEP through the Batch Ingestion API (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "credentials come only from the environment: PE_AEP_CLIENT_ID, PE_AEP_CLIENT_SECRET,\n"
            "PE_AEP_ORG_ID, PE_AEP_SANDBOX, PE_AEP_DATASET_ID (optional PE_AEP_BASE_URL,\n"
            "PE_AEP_IMS_URL, PE_AEP_SCOPES).\n"
            "example:\n  profile-enrichment upload data/exports/batch-<id>"
        ),
    )
    upl.add_argument("batch_dir", help="a batch folder written by export")
    upl.add_argument(
        "--poll-interval", type=float, default=10.0, help="seconds between batch status checks"
    )
    upl.set_defaults(func=cmd_upload)

    rep = sub.add_parser(
        "report",
        help="write the self-contained HTML model report (charts inline, opens offline)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  profile-enrichment report                          # -> data/reports/index.html\n"
            "  profile-enrichment report --warehouse /tmp/backtest.duckdb --out /tmp/report.html\n"
            "the report reads the warehouse read-only; `run` writes it after every dev build"
        ),
    )
    rep.add_argument(
        "--warehouse", help="DuckDB file (env PE_WAREHOUSE; default data/warehouse.duckdb)"
    )
    rep.add_argument("--out", help="HTML file (default: reports/index.html beside the warehouse)")
    rep.add_argument(
        "--exports", help="export folder to summarise (env PE_EXPORT_DIR; default data/exports)"
    )
    rep.set_defaults(func=cmd_report)

    lod = sub.add_parser(
        "load-raw",
        help="load raw XDM files into PostgreSQL (aep.experience_events, aep.profiles) for dbt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "DuckDB reads the files in place; PostgreSQL gets them loaded first, one row per\n"
            "record (source_file, source_row, raw_json), replaced in one transaction.\n"
            "the server comes from PE_PG_HOST, PE_PG_PORT, PE_PG_USER, PE_PG_PASSWORD, PE_PG_DBNAME\n"
            "(the same variables as the postgres target in profiles.yml).\n"
            "example:\n  profile-enrichment load-raw --raw data/raw && dbt build --target postgres"
        ),
    )
    lod.add_argument("--raw", help="folder with events/ (and profiles/) (env PE_RAW_DIR)")
    lod.set_defaults(func=cmd_load_raw)

    ben = sub.add_parser(
        "bench",
        help="time the pipeline against raw DuckDB, pandas and lifetimes on generated data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  profile-enrichment bench                      # ~1M customers, ~20M events\n"
            "  profile-enrichment bench --customers 20000    # quick run\n"
            "  profile-enrichment bench --customers 5000000 --stop-after baselines\n"
            "  profile-enrichment bench --customers 5000000 --resume   # later: the rest\n"
            "data is cached in DATA_DIR by parameters; results go to RESULTS_DIR as\n"
            "<date>-<machine>[-c<customers>][-d<days>].json and .md"
        ),
    )
    ben.add_argument(
        "--customers", type=_positive_int, default=1_000_000, help="people (~20 events each)"
    )
    ben.add_argument("--days", type=_positive_int, default=730, help="length of the history")
    ben.add_argument("--seed", type=int, default=7, help="generator seed")
    ben.add_argument(
        "--activity-scale",
        type=_positive_float,
        default=0.065,
        help="events per person relative to the generator's default (0.065: ~20 over 2 years)",
    )
    ben.add_argument("--data-dir", default="data/bench", help="cache for generated data")
    ben.add_argument("--results-dir", default="bench/results", help="where results are written")
    ben.add_argument(
        "--memory-limit",
        help="DuckDB memory_limit for every stage (env PE_DUCKDB_MEMORY_LIMIT; default 8GB)",
    )
    ben.add_argument(
        "--engines",
        help="comma-separated engines to measure beside DuckDB on the same files: postgres"
        " (the SQL layer; the postgres extra and Debian's postgresql, a server is started for"
        " the run), spark (the whole pipeline in a local session; the spark extra and Java)",
    )
    ben.add_argument(
        "--stop-after",
        choices=["full_refresh", "baselines", "incremental_refresh"],
        help="end the run cleanly after this stage (results marked incomplete); go on later"
        " with --resume. For runs too long for one sitting, such as 100M events",
    )
    ben.add_argument(
        "--resume",
        action="store_true",
        help="go on with the newest incomplete run of the same size (same commit, same"
        " --memory-limit), skipping the stages it measured",
    )
    ben.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        # A path the user gave cannot be read or written (not a folder, no permission, ...).
        where = f" {err.filename}" if getattr(err, "filename", None) else ""
        print(f"error: cannot use{where}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
