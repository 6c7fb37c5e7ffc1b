"""`profile-enrichment bench`: time the pipeline and its baselines on one data set, in one run.

What it does, in order:

1. generates ``days + 1`` days of events for ``customers`` people once per parameter set and
   caches them under ``data/bench/<key>/`` (the generation is timed the first time and the
   measurement is kept with the cache); the last day is split off as the "next night";
2. **full refresh**: ``profile-enrichment run`` on an empty warehouse (``dbt build``), then
   ``profile-enrichment export`` (XDM records, validation, batch files);
3. the **baselines** on the same files: raw DuckDB SQL, pandas RFM, lifetimes' fitters;
4. **incremental refresh**: the next day's file is added, run + export again;
5. **no-change rerun**: the same again, nothing new.

Every step is a subprocess. Its wall time and the peak RSS of its whole process tree (sampled
with psutil every 50 ms) are recorded, with dbt's per-model times from ``run_results.json``.
The results go to ``bench/results/<date>-<machine>[-c<customers>][-d<days>].json`` and ``.md``.
Nothing here asserts a timing; the targets are reported, met or not.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from profile_enrichment.errors import UserError

#: The generator averages ~130 events per person over two years; the benchmark wants ~20 (1M
#: customers ~ 20M events), so it scales activity per person down (purchases, sessions, e-mail).
DEFAULT_ACTIVITY_SCALE = 0.065
DEFAULT_CUSTOMERS = 1_000_000
DEFAULT_DAYS = 730
DEFAULT_MEMORY_LIMIT = "8GB"
START_DATE = date(2024, 1, 1)
RESULTS_SCHEMA_VERSION = 1

#: dbt models that make up the "feature layer" compared with the raw DuckDB baseline.
FEATURE_LAYER_PATHS = ("models/staging/", "models/intermediate/", "models/marts/features/")
FEATURE_LAYER_EXCLUDE = ("models/intermediate/ml/",)

#: (key, what, target, how the value compares: "le" = value <= target, "ge" = value >= target)
TARGETS: tuple[tuple[str, str, float, str, str], ...] = (
    ("full_refresh_seconds", "full refresh incl. export and validation", 60.0, "le", "s"),
    ("peak_rss_gb", "peak RSS (any stage)", 6.0, "le", "GB"),
    ("feature_layer_vs_raw_duckdb", "feature layer vs raw DuckDB", 1.5, "le", "x"),
    ("incremental_vs_full", "incremental refresh of one new day vs full", 0.2, "le", "x"),
    ("no_change_vs_full", "no-change rerun vs full", 0.1, "le", "x"),
    ("clv_speedup_vs_lifetimes", "CLV fit speed-up vs lifetimes", 10.0, "ge", "x"),
    ("clv_max_param_difference_pct", "CLV parameters vs lifetimes", 0.1, "le", "%"),
    ("export_seconds_per_million", "export + validation, per 1M profile records", 15.0, "le", "s"),
    ("generate_seconds", "generating the events", 60.0, "le", "s"),
)


@dataclass
class Measurement:
    """One measured subprocess."""

    seconds: float
    peak_rss_bytes: int
    returncode: int
    log: Path

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "peak_rss_bytes": self.peak_rss_bytes,
            "returncode": self.returncode,
        }


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def measure(
    command: list[str], *, cwd: Path, env: dict[str, str], log: Path, interval: float = 0.05
) -> Measurement:
    """Run ``command``; return wall seconds and the peak RSS of its process tree (all children)."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    with log.open("w") as out:
        started = time.perf_counter()
        popen = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        proc = psutil.Process(popen.pid)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _tree_rss(proc))
                done.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        returncode = popen.wait()
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
    return Measurement(seconds, peak, returncode, log)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
@dataclass
class BenchData:
    """The cached data set: base events (all but the last day) and the next day's events."""

    root: Path
    base_files: list[Path]
    profiles_dir: Path
    next_day_file: Path
    base_events: int
    next_day_events: int
    generate: dict[str, Any]


def _cache_key(customers: int, days: int, seed: int, activity_scale: float) -> str:
    return f"c{customers}-d{days}-s{seed}-a{activity_scale:g}"


def prepare_data(
    cache: Path,
    *,
    customers: int,
    days: int,
    seed: int,
    activity_scale: float,
    project_dir: Path,
    env: dict[str, str],
    echo: Callable[[str], None],
) -> BenchData:
    """Generate ``days + 1`` days once (cached by parameters) and split off the last day."""
    generated = cache / "generated"
    gen_record = cache / "generate.json"
    command = [
        _pe(),
        "generate",
        "--customers",
        str(customers),
        "--days",
        str(days + 1),
        "--seed",
        str(seed),
        "--activity-scale",
        str(activity_scale),
        "--start-date",
        START_DATE.isoformat(),
        "--out",
        str(generated),
        "--if-changed",
    ]
    if gen_record.exists() and (generated / "_generator.json").exists():
        generate = json.loads(gen_record.read_text()) | {"cached": True}
        # --if-changed only checks the recorded arguments: cheap, and safe if files were removed.
        check = subprocess.run(command, cwd=project_dir, env=env, capture_output=True, text=True)
        if check.returncode != 0 or "up to date" not in check.stdout:
            gen_record.unlink()
            return prepare_data(
                cache,
                customers=customers,
                days=days,
                seed=seed,
                activity_scale=activity_scale,
                project_dir=project_dir,
                env=env,
                echo=echo,
            )
        echo(f"data: cached in {generated}")
    else:
        echo(f"data: generating {customers:,} customers over {days + 1} days -> {generated}")
        shutil.rmtree(cache / "split", ignore_errors=True)
        m = measure(command, cwd=project_dir, env=env, log=cache / "generate.log")
        if m.returncode != 0:
            raise UserError(f"generating the benchmark data failed; see {m.log}")
        meta = json.loads((generated / "_generator.json").read_text())
        events = meta["counts"]["events"]
        generate = m.as_dict() | {
            "events": events,
            "events_per_second": round(events / m.seconds, 1),
            "customers": customers,
            "cached": False,
        }
        gen_record.write_text(json.dumps(generate, indent=2) + "\n")
    return _split_last_day(cache, generated, days, generate, echo)


def _split_last_day(
    cache: Path, generated: Path, days: int, generate: dict[str, Any], echo
) -> BenchData:
    """Events before the last day go to split/base/, the last day to split/next_day/."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from profile_enrichment.xdm_events import write_table

    split = cache / "split"
    record = split / "split.json"
    last_day = (START_DATE + timedelta(days=days)).isoformat()
    if not record.exists():
        echo(f"data: splitting off {last_day} as the next night's events")
        shutil.rmtree(split, ignore_errors=True)
        base_events = 0
        next_parts = []
        for path in sorted((generated / "events").glob("*.parquet")):
            table = pq.read_table(path)
            before = pc.less(table["timestamp"], last_day)
            base = table.filter(before)
            next_parts.append(table.filter(pc.invert(before)))
            base_events += base.num_rows
            write_table(base, split / "base" / "events" / path.name)
            del table, base
        next_day = pa.concat_tables(next_parts)
        write_table(next_day, split / "next_day" / "part-next-day.parquet")
        record.write_text(
            json.dumps({"base_events": base_events, "next_day_events": next_day.num_rows}) + "\n"
        )
    counts = json.loads(record.read_text())
    return BenchData(
        root=cache,
        base_files=sorted((split / "base" / "events").glob("*.parquet")),
        profiles_dir=generated / "profiles",
        next_day_file=split / "next_day" / "part-next-day.parquet",
        base_events=counts["base_events"],
        next_day_events=counts["next_day_events"],
        generate=generate,
    )


# --------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------
def _pe() -> str:
    local = Path(sys.executable).with_name("profile-enrichment")
    return str(local) if local.exists() else "profile-enrichment"


def _no_report() -> list[str]:
    """`run` may also write an HTML report; the benchmark times build and export only."""
    from profile_enrichment.cli import build_parser

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    return ["--no-report"] if "--no-report" in run._option_string_actions else []


def _dbt_timings(target: Path) -> dict[str, Any]:
    """Per-model execution times from run_results.json and the feature layer's total."""
    try:
        results = json.loads((target / "run_results.json").read_text())
        manifest = json.loads((target / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    nodes = manifest.get("nodes", {})
    models: dict[str, float] = {}
    tests = 0.0
    feature_layer = 0.0
    for result in results.get("results", []):
        uid = result.get("unique_id", "")
        seconds = float(result.get("execution_time") or 0.0)
        if not uid.startswith("model."):
            tests += seconds
            continue
        name = uid.split(".")[-1]
        models[name] = round(seconds, 3)
        path = nodes.get(uid, {}).get("original_file_path", "")
        if path.startswith(FEATURE_LAYER_PATHS) and not path.startswith(FEATURE_LAYER_EXCLUDE):
            feature_layer += seconds
    slowest = dict(sorted(models.items(), key=lambda kv: -kv[1])[:12])
    return {
        "elapsed_seconds": round(float(results.get("elapsed_time") or 0.0), 3),
        "models_seconds": round(sum(models.values()), 3),
        "tests_seconds": round(tests, 3),
        "feature_layer_seconds": round(feature_layer, 3),
        "models": len(models),
        "slowest_models": slowest,
        "model_seconds": dict(sorted(models.items())),  # every model: growth across sizes
    }


def _exported_records(log: Path) -> int | None:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("export:") and "profile records" in line:
            digits = line.split()[1].replace(",", "")
            return int(digits) if digits.isdigit() else None
    return None


def _pipeline_stage(name: str, work: Path, events: int, project_dir: Path, env) -> dict[str, Any]:
    """One nightly run as a scheduler would start it: `run --if-changed` (build + export)."""
    command = [
        _pe(),
        "run",
        "--raw",
        str(work / "raw"),
        "--warehouse",
        str(work / "warehouse.duckdb"),
        "--artifacts",
        str(work / "artifacts"),
        "--if-changed",
        *_no_report(),
    ]
    target = Path(env["DBT_TARGET_PATH"])
    (target / "run_results.json").unlink(missing_ok=True)
    run = measure(command, cwd=project_dir, env=env, log=work / f"{name}.log")
    text = run.log.read_text(errors="replace")
    if run.returncode != 0:
        # what it cost until it failed, and why: dbt writes run_results.json on failure too
        raise StageFailed(
            name,
            run.as_dict()
            | {
                "events": events,
                "failed": True,
                "error": _failure_lines(text),
                "dbt": _dbt_timings(target),
            },
            run.log,
        )
    return run.as_dict() | {
        "events": events,
        "events_per_second": round(events / run.seconds, 1),
        "dbt_skipped": "dbt build skipped" in text,
        "export_reused": "export:      unchanged, reused" in text,
        "records": _exported_records(run.log),
        "dbt": _dbt_timings(target),
    }


class StageFailed(UserError):
    """A pipeline stage failed; ``measured`` is what it cost until then (kept in the results)."""

    def __init__(self, stage: str, measured: dict[str, Any], log: Path) -> None:
        reason = measured["error"][0] if measured["error"] else "see the log"
        super().__init__(
            f"bench stage {stage}: the pipeline run failed after {measured['seconds']:.0f} s: "
            f"{reason[:300]}; see {log}"
        )
        self.stage = stage
        self.measured = measured


def _failure_lines(log_text: str) -> list[str]:
    """The CLI's summary of a failed build ("  - model...: error"), else its last lines."""
    lines = log_text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("dbt build failed"):
            return [x.strip() for x in lines[i + 1 : i + 6] if x.strip().startswith("- ")]
    return [x for x in lines[-3:] if x.strip()]


def _export_stage(work: Path, project_dir: Path, env) -> dict[str, Any]:
    """Export + validation of every profile record into an empty folder (nothing to reuse)."""
    out = work / "export-only"
    shutil.rmtree(out, ignore_errors=True)
    command = [_pe(), "export", "--warehouse", str(work / "warehouse.duckdb"), "--out", str(out)]
    m = measure(command, cwd=project_dir, env=env, log=work / "export_only.log")
    if m.returncode != 0:
        raise UserError(f"bench stage export: the export failed; see {m.log}")
    records = _exported_records(m.log) or 0
    return m.as_dict() | {
        "records": records,
        "records_per_second": round(records / m.seconds, 1),
    }


def _baseline(
    name: str, args: list[str], work: Path, project_dir: Path, env: dict[str, str]
) -> dict[str, Any]:
    command = [sys.executable, "-m", "profile_enrichment.bench.baselines", name, *args]
    m = measure(command, cwd=project_dir, env=env, log=work / f"baseline-{name}.log")
    lines = m.log.read_text(errors="replace").strip().splitlines()
    if m.returncode != 0 or not lines:
        raise UserError(f"baseline {name} failed; see {m.log}")
    return json.loads(lines[-1]) | {"process": m.as_dict()}


def _as_of_dates(warehouse: Path) -> list[str]:
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = con.sql(
            "select distinct cast(as_of_date as varchar) from customer_feature_snapshots "
            "union select distinct cast(as_of_date as varchar) from customer_features"
        ).fetchall()
    finally:
        con.close()
    return sorted(r[0] for r in rows)


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """Cores, memory, CPU model and the versions that matter for the numbers."""
    from importlib import metadata

    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("dbt-core", "dbt-duckdb", "duckdb", "pandas", "pyarrow", "numpy", "scipy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        versions["lifetimes"] = metadata.version("lifetimes")
    except metadata.PackageNotFoundError:
        versions["lifetimes"] = None
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }


def code_version(project_dir: Path) -> str | None:
    """The project's git commit, with "+changes" when the work tree differs from it; None
    outside a git checkout. Results of different code must not be mistaken for each other."""
    git = shutil.which("git")
    if git is None:
        return None

    def output(*args: str) -> str:
        return subprocess.run(
            [git, *args], cwd=project_dir, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        head = output("rev-parse", "--short=12", "HEAD")
        dirty = output("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+changes" if dirty else head


def code_changes_digest(project_dir: Path) -> str | None:
    """SHA-256 of the work tree's uncommitted changes to tracked files (``git diff HEAD``);
    None when there are none or outside git. Tells whether two "+changes" runs ran one code."""
    import hashlib

    git = shutil.which("git")
    if git is None:
        return None
    try:
        diff = subprocess.run(
            [git, "diff", "HEAD", "--binary"],
            cwd=project_dir,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return hashlib.sha256(diff).hexdigest() if diff else None


def machine_slug(info: dict[str, Any]) -> str:
    gib = round(info["memory_bytes"] / 2**30)
    return f"{platform.machine()}-{info['logical_cores']}c-{gib}g"


ENGINES = ("postgres", "spark")


def check_engines(engines: Sequence[str]) -> None:
    """Fail before the benchmark starts (not an hour into it) when an engine cannot run."""
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise UserError(f"unknown engine(s) {unknown}", hint=f"choose from {', '.join(ENGINES)}")
    if "postgres" in engines:
        from profile_enrichment.engines.local_postgres import pg_bindir

        if pg_bindir() is None:
            raise UserError(
                "--engines postgres needs PostgreSQL's initdb and pg_ctl, and none was found",
                hint="apt-get install postgresql (or: make postgres), or set PE_PG_BINDIR",
            )
    if "spark" in engines:
        from profile_enrichment.engines.local_spark import check_spark

        check_spark()


def _engine_stages(
    engines: Sequence[str], work: Path, events: int, project_dir: Path, env, echo
) -> dict[str, Any]:
    """The same work on DuckDB and on each engine, on the same files, each from empty.

    Each is `profile-enrichment run` as a user starts it:
    - postgres: the SQL layer (selector sql_layer), which includes loading the raw files and
      the champions compiled to SQL (trained by the full refresh above), on a server started
      for the benchmark (engines.local_postgres); compared with the SQL layer on DuckDB.
    - spark: the whole pipeline, the Python models trained in the local session, in a fresh
      PE_SPARK_DIR; compared with the whole pipeline on DuckDB (a fresh file and registry,
      no export, no report).
    Peak RSS is the client's process tree (CLI + dbt; Spark's JVM is in it, the PostgreSQL
    server's own memory is not).
    """
    from profile_enrichment.engines.local_postgres import LocalPostgres

    check_engines(engines)
    raw = ["--raw", str(work / "raw")]
    out: dict[str, Any] = {}

    def stage(name: str, workload: str, command: list[str], stage_env) -> None:
        run = measure(command, cwd=project_dir, env=stage_env, log=work / f"engine-{name}.log")
        if run.returncode != 0:
            raise UserError(f"bench engine stage {name} failed; see {run.log}")
        out[name] = run.as_dict() | {
            "workload": workload,
            "events": events,
            "events_per_second": round(events / run.seconds, 1),
        }
        echo(
            f"  {name}: {run.seconds:.1f}s wall, client peak RSS {run.peak_rss_bytes / 1e9:.2f} GB"
        )

    def fresh(path: Path) -> Path:
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
        return path

    if "postgres" in engines:
        common = [*raw, "--artifacts", str(work / "artifacts"), "--quiet"]
        echo("engines: the SQL layer (selector sql_layer) on DuckDB, a fresh file")
        warehouse = fresh(work / "engines-duckdb.duckdb")
        stage(
            "duckdb",
            "sql_layer",
            [_pe(), "run", *common, "--warehouse", str(warehouse), "--selector", "sql_layer"],
            env,
        )
        echo("engines: the SQL layer on PostgreSQL (load + build), a server started for it")
        server = LocalPostgres().start()
        try:
            stage(
                "postgres",
                "sql_layer",
                [_pe(), "run", *common, "--target", "postgres"],
                env | server.env(),
            )
        finally:
            server.stop()
    if "spark" in engines:
        echo("engines: the whole pipeline on DuckDB, a fresh file and registry")
        warehouse = fresh(work / "engines-pipeline.duckdb")
        artifacts = fresh(work / "engines-pipeline-artifacts")
        command = [
            _pe(), "run", *raw, "--warehouse", str(warehouse), "--artifacts", str(artifacts),
            "--no-export", "--no-report", "--quiet",
        ]  # fmt: skip
        stage("duckdb_pipeline", "pipeline", command, env)
        echo("engines: the whole pipeline on Spark (local session), a fresh PE_SPARK_DIR")
        spark_dir = fresh(work / "spark")
        stage(
            "spark",
            "pipeline",
            [_pe(), "run", *raw, "--target", "spark", "--quiet"],
            env | {"PE_SPARK_DIR": str(spark_dir)},
        )
    baseline = {"sql_layer": "duckdb", "pipeline": "duckdb_pipeline"}
    for entry in out.values():
        reference = out[baseline[entry["workload"]]]["seconds"]
        entry["ratio_to_duckdb"] = round(entry["seconds"] / reference, 2)
    return out


#: Where a run may stop and be resumed later (``--stop-after``), in the order they run.
STOP_POINTS = ("full_refresh", "baselines", "incremental_refresh")
BASELINE_KEYS = ("raw_duckdb", "pandas", "lifetimes")


def measured_stop_points(stages: dict[str, Any], baselines: dict[str, Any]) -> list[str]:
    """The stop points a run has measured, in order: what a resumed run skips. The one
    definition of "done" for each, used when resuming and by the run itself."""
    done = {
        "full_refresh": "full_refresh" in stages,
        "baselines": all(key in baselines for key in BASELINE_KEYS),
        "incremental_refresh": "incremental_refresh" in stages,
    }
    return [point for point in STOP_POINTS if done[point]]


#: Stages that change the warehouse: one interrupted half-way cannot be resumed, because the
#: next stage would no longer start from the state it is meant to measure.
PIPELINE_STAGE_NAMES = ("full_refresh", "incremental_refresh", "no_change_rerun")


def _results_name(
    customers: int, days: int, info: dict[str, Any], memory_limit: str = DEFAULT_MEMORY_LIMIT
) -> str:
    suffix = "" if customers == DEFAULT_CUSTOMERS else f"-c{customers}"
    suffix += "" if days == DEFAULT_DAYS else f"-d{days}"  # another history: another file
    # another memory limit: another file, so a run at 4GB does not replace the day's 8GB run
    if memory_limit != DEFAULT_MEMORY_LIMIT:
        suffix += "-m" + re.sub(r"[^0-9A-Za-z.]", "", memory_limit)
    return f"{machine_slug(info)}{suffix}"


def find_resumable(
    results_dir: Path,
    name: str,
    parameters: dict[str, Any],
    code: str | None,
    changes: str | None = None,
) -> tuple[dict[str, Any], Path]:
    """The newest incomplete results file of this size and machine that a run can go on with.

    Refuses (a :class:`UserError` saying why) when there is none, when the code differs from
    the code that measured the earlier stages (one table must measure one version), when the
    DuckDB memory limit differs, or when a stage that changes the warehouse was interrupted.
    """
    candidates = sorted(results_dir.glob(f"????-??-??-{name}.json"), reverse=True)
    keys = ("customers", "days", "seed", "activity_scale")
    for path in candidates:
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if results.get("complete", True):
            continue
        if any(results["parameters"].get(k) != parameters[k] for k in keys):
            continue
        same_changes = results.get("code_changes_digest") == changes
        if results.get("code_version") != code or not same_changes:
            raise UserError(
                f"cannot resume {path.name}: it measured code {results.get('code_version')}, "
                f"this checkout is {code}"
                + ("" if same_changes else " (with other uncommitted changes)"),
                hint="resume from a clean checkout of the same commit, or start a new run",
            )
        if results["parameters"].get("duckdb_memory_limit") != parameters["duckdb_memory_limit"]:
            raise UserError(
                f"cannot resume {path.name}: it ran with DuckDB memory_limit "
                f"{results['parameters'].get('duckdb_memory_limit')}, not "
                f"{parameters['duckdb_memory_limit']}"
            )
        if results.get("failed_stage"):
            raise UserError(
                f"cannot resume {path.name}: its {results['failed_stage']} stage failed",
                hint="fix the cause (see the results' error) and start a new run",
            )
        interrupted = results.get("in_progress")
        if interrupted in PIPELINE_STAGE_NAMES:
            raise UserError(
                f"cannot resume {path.name}: its {interrupted} stage was interrupted, so the "
                "warehouse is no longer in the state the next stage must start from",
                hint="start a new run without --resume",
            )
        if "full_refresh" not in results["stages"]:
            continue
        return results, path
    raise UserError(
        f"nothing to resume: no incomplete run of this size in {results_dir} with its full "
        "refresh measured",
        hint="start the run without --resume (use --stop-after to end it at a stage)",
    )


def run_bench(
    *,
    customers: int = DEFAULT_CUSTOMERS,
    days: int = DEFAULT_DAYS,
    seed: int = 7,
    activity_scale: float = DEFAULT_ACTIVITY_SCALE,
    data_dir: Path,
    results_dir: Path,
    project_dir: Path,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    engines: Sequence[str] = (),
    stop_after: str | None = None,
    resume: bool = False,
    echo: Callable[[str], None] = print,
) -> tuple[dict[str, Any], Path]:
    """Run every stage and baseline; write the JSON and Markdown results; return (results, json).

    ``engines`` (``postgres``, ``spark``): also build the same work there and on DuckDB, on
    the same files, and report the times side by side (see :func:`_engine_stages`).

    ``stop_after`` (one of :data:`STOP_POINTS`) ends the run cleanly after that stage, leaving
    an incomplete results file and the warehouse as they are; ``resume`` goes on with the
    newest such run (same size, same code), skipping what it measured. A run too long for one
    sitting (100M events) is measured in parts this way, each stage still whole.
    """
    check_engines(engines)
    if stop_after is not None and stop_after not in STOP_POINTS:
        raise UserError(f"--stop-after must be one of {', '.join(STOP_POINTS)}, got {stop_after!r}")
    end = START_DATE + timedelta(days=days + 1)
    if end > datetime.now(UTC).date():
        raise UserError(f"--days {days} reaches past today from {START_DATE}; use fewer days")
    started_at = datetime.now(UTC).replace(microsecond=0)
    load_start = os.getloadavg()
    cache = data_dir / _cache_key(customers, days, seed, activity_scale)
    work = cache / "work"
    info = machine_info()
    code = code_version(project_dir)
    changes = code_changes_digest(project_dir)
    name = _results_name(customers, days, info, memory_limit)
    results_dir.mkdir(parents=True, exist_ok=True)
    wanted = {
        "customers": customers,
        "days": days,
        "seed": seed,
        "activity_scale": activity_scale,
        "duckdb_memory_limit": memory_limit,
    }
    previous: dict[str, Any] | None = None
    if resume:
        previous, json_path = find_resumable(results_dir, name, wanted, code, changes)
        if not (work / "warehouse.duckdb").exists():
            raise UserError(
                f"cannot resume {json_path.name}: its warehouse {work / 'warehouse.duckdb'} "
                "is gone",
                hint="start a new run without --resume",
            )
        measured = measured_stop_points(previous["stages"], previous["baselines"])
        if stop_after in measured:
            raise UserError(
                f"--stop-after {stop_after}: {json_path.name} has already measured that stage",
                hint=f"measured so far: {', '.join(measured)}",
            )
        echo(
            f"resuming {json_path.name} (started {previous['started_at']}; measured so far: "
            f"{', '.join(measured)})"
        )
    else:
        shutil.rmtree(work, ignore_errors=True)
        (work / "raw" / "events").mkdir(parents=True)
        json_path = results_dir / f"{started_at.date().isoformat()}-{name}.json"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PE_") and not key.startswith("DBT_")
    }
    env |= {
        "DBT_PROFILES_DIR": str(project_dir),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
        "DBT_TARGET_PATH": str(work / "target"),
        "DBT_LOG_PATH": str(work / "logs"),
        "PE_TARGET": "dev",
        "PE_DUCKDB_MEMORY_LIMIT": memory_limit,
    }
    data = prepare_data(
        cache,
        customers=customers,
        days=days,
        seed=seed,
        activity_scale=activity_scale,
        project_dir=project_dir,
        env=env,
        echo=echo,
    )
    if previous is None:
        for path in data.base_files:
            (work / "raw" / "events" / path.name).symlink_to(path.resolve())
        (work / "raw" / "profiles").symlink_to(
            data.profiles_dir.resolve(), target_is_directory=True
        )
        stages: dict[str, Any] = {"generate": data.generate}
        baselines: dict[str, Any] = {}
        results: dict[str, Any] = {
            "schema_version": RESULTS_SCHEMA_VERSION,
            "started_at": started_at.isoformat(),
            "complete": False,
            "machine": info,
            "code_version": code,
            "code_changes_digest": changes,
            "load_average": {"start": list(load_start), "end": None},
            "parameters": wanted
            | {
                "events": data.base_events,
                "next_day_events": data.next_day_events,
                "as_of_dates": None,
            },
            "stages": stages,
            "baselines": baselines,
            "sittings": [],
        }
    else:
        results = previous
        stages, baselines = results["stages"], results["baselines"]
    sitting = {"started_at": started_at.isoformat(), "load_average_start": list(load_start)}
    results.setdefault("sittings", []).append(sitting)

    def save() -> None:
        """Write what is measured so far, so a run stopped half-way still leaves its numbers."""
        results["load_average"]["end"] = list(os.getloadavg())
        sitting["load_average_end"] = results["load_average"]["end"]
        results["ratios"] = compute_ratios(results)
        results["targets"] = evaluate_targets(results)
        json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        json_path.with_suffix(".md").write_text(markdown_report(results))

    def begin(stage: str) -> None:
        """Mark a stage as running, so a resume can tell it was interrupted."""
        results["in_progress"] = stage
        json_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")

    def pipeline(stage: str, events: int) -> dict[str, Any]:
        """Run one pipeline stage; a failure is saved with what it cost, then re-raised."""
        try:
            return _pipeline_stage(stage, work, events, project_dir, env)
        except StageFailed as failed:
            stages[stage] = failed.measured
            results["failed_stage"] = stage
            save()
            raise

    def finish(stage: str) -> bool:
        """Save; True when the run is to stop after this stage."""
        results["in_progress"] = None
        sitting.setdefault("stages", []).append(stage)
        save()
        if stop_after == stage:
            echo(f"stopped after {stage}, as asked: go on later with --resume")
            return True
        return False

    if "full_refresh" not in measured_stop_points(stages, baselines):
        echo(f"full refresh: dbt build from empty + export ({data.base_events:,} events)")
        begin("full_refresh")
        stages["full_refresh"] = pipeline("full_refresh", data.base_events)
        _echo_stage(echo, stages["full_refresh"])
        echo("export + validation alone, into an empty folder")
        stages["export"] = _export_stage(work, project_dir, env)
        echo(f"  {stages['export']['seconds']:.1f}s for {stages['export']['records']:,} records")
        if finish("full_refresh"):
            return results, json_path

    if "baselines" not in measured_stop_points(stages, baselines):
        # read-only on the warehouse: a missing baseline is simply measured now
        dates = _as_of_dates(work / "warehouse.duckdb")
        results["parameters"]["as_of_dates"] = len(dates)
        as_of_args = [arg for d in dates for arg in ("--as-of", d)]
        raw_args = ["--raw", str(work / "raw"), *as_of_args]
        wh_args = ["--warehouse", str(work / "warehouse.duckdb")]
        runs = {
            "raw_duckdb": (
                "raw-duckdb",
                "raw DuckDB (RFM, category affinity, snapshots)",
                raw_args,
            ),
            "pandas": ("pandas", "pandas RFM", raw_args),
            "lifetimes": ("lifetimes", "lifetimes BG/NBD + Gamma-Gamma", wh_args),
        }
        for key in BASELINE_KEYS:
            name_, what, args = runs[key]
            if key not in baselines:
                echo(f"baseline: {what}")
                baselines[key] = _baseline(name_, args, work, project_dir, env)
        if finish("baselines"):
            return results, json_path

    total = data.base_events + data.next_day_events
    if "incremental_refresh" not in measured_stop_points(stages, baselines):
        next_link = work / "raw" / "events" / data.next_day_file.name
        if not next_link.exists():
            next_link.symlink_to(data.next_day_file.resolve())
        echo(f"incremental refresh: one more day ({data.next_day_events:,} new events)")
        begin("incremental_refresh")
        stages["incremental_refresh"] = pipeline("incremental_refresh", total)
        stages["incremental_refresh"]["new_events"] = data.next_day_events
        _echo_stage(echo, stages["incremental_refresh"])
        if finish("incremental_refresh"):
            return results, json_path
    echo("no-change rerun")
    begin("no_change_rerun")
    stages["no_change_rerun"] = pipeline("no_change_rerun", total)
    _echo_stage(echo, stages["no_change_rerun"])
    if engines:
        results["engines"] = _engine_stages(engines, work, total, project_dir, env, echo)
    results["complete"] = True
    finish("no_change_rerun")
    return results, json_path


def _echo_stage(echo, stage: dict[str, Any]) -> None:
    notes = _stage_notes(stage)
    echo(
        f"  {stage['seconds']:.1f}s wall, peak RSS {stage['peak_rss_bytes'] / 1e9:.2f} GB, "
        f"{stage['events_per_second']:,.0f} events/s{' (' + notes + ')' if notes else ''}"
    )


def _stage_notes(stage: dict[str, Any]) -> str:
    notes = []
    if stage.get("dbt_skipped"):
        notes.append("dbt skipped: nothing changed")
    elif stage.get("dbt", {}).get("elapsed_seconds"):
        notes.append(f"dbt {stage['dbt']['elapsed_seconds']:.1f} s")
    if stage.get("export_reused"):
        notes.append("export reused")
    return ", ".join(notes)


def compute_ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """The same-run comparisons the targets are stated in."""
    stages, base = results["stages"], results["baselines"]

    def done(name: str) -> dict[str, Any]:
        """A stage that completed (a failed one has a time, but not the stage's time)."""
        stage = stages.get(name, {})
        return {} if stage.get("failed") else stage

    full = done("full_refresh") | {"dbt": done("full_refresh").get("dbt", {})}
    incremental = done("incremental_refresh")
    no_change = done("no_change_rerun")

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 4) if a is not None and b else None

    lifetimes = base.get("lifetimes", {})
    peak = max(
        [s.get("peak_rss_bytes", 0) for s in stages.values()]
        + [b.get("process", {}).get("peak_rss_bytes", 0) for b in base.values()]
    )
    diff = lifetimes.get("max_relative_param_difference")
    export = stages.get("export", {})
    return {
        "full_refresh_seconds": full.get("seconds"),
        "peak_rss_gb": round(peak / 1e9, 3),
        "feature_layer_vs_raw_duckdb": ratio(
            full["dbt"].get("feature_layer_seconds"), base.get("raw_duckdb", {}).get("seconds")
        ),
        "feature_layer_vs_pandas": ratio(
            full["dbt"].get("feature_layer_seconds"), base.get("pandas", {}).get("seconds")
        ),
        "incremental_vs_full": ratio(incremental.get("seconds"), full.get("seconds")),
        "no_change_vs_full": ratio(no_change.get("seconds"), full.get("seconds")),
        "clv_speedup_vs_lifetimes": ratio(lifetimes.get("seconds"), lifetimes.get("ours_seconds")),
        "clv_max_param_difference_pct": None if diff is None else round(100 * diff, 5),
        "export_seconds": export.get("seconds"),
        # the target is stated for 1M records; a run exports as many as have features
        "export_seconds_per_million": (
            round(export["seconds"] * 1e6 / export["records"], 3)
            if export.get("seconds") and export.get("records")
            else None
        ),
        "generate_seconds": stages["generate"].get("seconds"),
    }


#: Targets in absolute units hold at 20M events; a smaller run is not judged against them.
ABSOLUTE_TARGETS = (
    "full_refresh_seconds",
    "peak_rss_gb",
    "export_seconds_per_million",
    "generate_seconds",
)
#: The absolute targets are judged on runs of 15M-30M events (the 100M scale run is not).
TARGET_SIZE_EVENTS = (15_000_000, 30_000_000)


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met (None: not measured, or an
    absolute target on a run smaller than the 20M events it is stated for)."""
    ratios = results["ratios"]
    low, high = TARGET_SIZE_EVENTS
    at_size = low <= results["parameters"]["events"] <= high
    rows = []
    for key, what, target, how, unit in TARGETS:
        value = ratios.get(key)
        met = None if value is None else (value <= target if how == "le" else value >= target)
        if key in ABSOLUTE_TARGETS and not at_size:
            met = None
        rows.append(
            {"key": key, "what": what, "target": target, "op": how, "unit": unit}
            | {"value": value, "met": met}
        )
    return rows


def _fmt_bytes(n: int | None) -> str:
    return "" if not n else f"{n / 1e9:.2f} GB"


def markdown_report(results: dict[str, Any]) -> str:
    """The results as Markdown tables (what the README shows)."""
    m, p = results["machine"], results["parameters"]
    stages, base = results["stages"], results["baselines"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    load = results["load_average"]
    lines = [
        f"### {p['events']:,} events, {p['customers']:,} customers, {p['days']} days "
        f"({results['started_at'][:10]})",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} cores, {m['memory_bytes'] / 2**30:.0f} GiB, "
        f"{m['os']}, Python {m['python']}; {versions}. DuckDB memory_limit "
        f"{p['duckdb_memory_limit']}. Load average {load['start'][0]:.1f} at the start, "
        f"{load['end'][0]:.1f} at the end (the machine is shared). "
        f"Code: {results.get('code_version') or 'unknown (not a git checkout)'}.",
        "",
        "| stage | wall | peak RSS (tree) | events/s | notes |",
        "|---|---:|---:|---:|---|",
    ]
    gen = stages["generate"]
    cached = " (cached; measured when generated)" if gen.get("cached") else ""
    lines.append(
        f"| generate {gen.get('events', 0):,} events{cached} | {gen.get('seconds', 0):.1f} s "
        f"| {_fmt_bytes(gen.get('peak_rss_bytes'))} | {gen.get('events_per_second', 0):,.0f} | |"
    )
    labels = {
        "full_refresh": "full refresh (`run`: dbt build from empty + export + validation)",
        "export": "of which: export + validation alone (`export`, empty folder)",
        "incremental_refresh": "incremental refresh (`run --if-changed`, +1 day)",
        "no_change_rerun": "no-change rerun (`run --if-changed`)",
    }
    for key, label in labels.items():
        if key not in stages:
            lines.append(f"| {label} | not measured (run stopped before) | | | |")
            continue
        s = stages[key]
        rate = s.get("events_per_second")
        if s.get("failed"):
            error = "; ".join(s.get("error") or []) or "see the stage's log"
            lines.append(
                f"| {label} | **failed** after {s['seconds']:.1f} s "
                f"| {_fmt_bytes(s['peak_rss_bytes'])} | | {error[:400]} |"
            )
            continue
        if key == "export":
            note, rate_text = f"{s['records']:,} records, {s['records_per_second']:,.0f}/s", ""
        else:
            note, rate_text = _stage_notes(s), f"{rate:,.0f}"
        lines.append(
            f"| {label} | {s['seconds']:.1f} s | {_fmt_bytes(s['peak_rss_bytes'])} "
            f"| {rate_text} | {note} |"
        )
    full_dbt = stages["full_refresh"]["dbt"]
    if len(base) == 3:
        lines += _baseline_lines(results, full_dbt)
    lines += [
        "",
        "| target (2 cores, 24 GiB, 20M events) | target | measured | met |",
        "|---|---:|---:|:---:|",
    ]
    for row in results["targets"]:
        op = "≤" if row["op"] == "le" else "≥"
        value = "n/a" if row["value"] is None else f"{row['value']:g} {row['unit']}"
        met = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
        if row["met"] is None and row["value"] is not None:
            met = "n/a (not at 20M events)"
        lines.append(f"| {row['what']} | {op} {row['target']:g} {row['unit']} | {value} | {met} |")
    if results.get("engines"):
        lines += [
            "",
            "| engine | work | wall | peak RSS (client) | ratio to DuckDB (same work) |",
            "|---|---|---:|---:|---:|",
        ]
        work_names = {
            "sql_layer": "the SQL layer (`run --selector sql_layer`; PostgreSQL: load + build)",
            "pipeline": "the whole pipeline, Python models included (`run --no-export`)",
        }
        for name, e in results["engines"].items():
            workload = e.get("workload", "sql_layer")  # results written before spark existed
            lines.append(
                f"| {name} | {work_names[workload]} | {e['seconds']:.1f} s "
                f"| {_fmt_bytes(e['peak_rss_bytes'])} | {e['ratio_to_duckdb']}x |"
            )
    slow = full_dbt.get("slowest_models", {})
    if slow:
        lines += ["", "Slowest models in the full refresh (dbt execution time):", ""]
        ordered = sorted(slow.items(), key=lambda kv: -kv[1])  # JSON keeps keys sorted by name
        lines.append(", ".join(f"`{k}` {v:.1f} s" for k, v in ordered))
    sittings = results.get("sittings", [])
    if len(sittings) > 1:
        parts = [
            f"{s['started_at'][:16].replace('T', ' ')} UTC: {', '.join(s.get('stages', [])) or '-'}"
            f" (load {s['load_average_start'][0]:.1f} -> "
            f"{s.get('load_average_end', s['load_average_start'])[0]:.1f})"
            for s in sittings
        ]
        lines += [
            "",
            f"Measured in {len(sittings)} sittings (`--stop-after`, then `--resume`; same code, "
            f"each stage whole): {'; '.join(parts)}.",
        ]
    if results.get("failed_stage"):
        lines += [
            "",
            f"**Failed run**: the {results['failed_stage']} stage failed; the row above gives "
            "its time until then and dbt's error. The models it finished are in the JSON "
            "(`stages.<stage>.dbt.model_seconds`).",
        ]
    elif not results.get("complete", True):
        lines += ["", "**Incomplete run**: the stages above are those measured before it stopped."]
    return "\n".join(lines) + "\n"


def _baseline_lines(results: dict[str, Any], full_dbt: dict[str, Any]) -> list[str]:
    base = results["baselines"]
    raw, pd_, lt = base["raw_duckdb"], base["pandas"], base["lifetimes"]
    return [
        "",
        "| same run, same files | ours | baseline | ratio |",
        "|---|---:|---:|---:|",
        f"| feature layer (sum of dbt model times) vs raw DuckDB SQL | "
        f"{full_dbt.get('feature_layer_seconds', 0):.1f} s | {raw['seconds']:.1f} s | "
        f"{results['ratios']['feature_layer_vs_raw_duckdb']}x |",
        f"| feature layer vs pandas RFM | {full_dbt.get('feature_layer_seconds', 0):.1f} s | "
        f"{pd_['seconds']:.1f} s | {results['ratios']['feature_layer_vs_pandas']}x |",
        f"| CLV fit (BG/NBD + Gamma-Gamma, {lt['customers']:,} customers) vs lifetimes | "
        f"{lt['ours_seconds']:.2f} s | {lt['seconds']:.2f} s | "
        f"{results['ratios']['clv_speedup_vs_lifetimes']}x faster; parameters within "
        f"{results['ratios']['clv_max_param_difference_pct']}% |",
    ]
