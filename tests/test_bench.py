"""The benchmark harness end to end at a tiny size: every stage and baseline is measured and
written. Timings are never asserted (the machine is shared); only that each was measured."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import PROJECT_DIR, _env, run_cli

STAGES = ("generate", "full_refresh", "export", "incremental_refresh", "no_change_rerun")
PIPELINE_STAGES = ("full_refresh", "incremental_refresh", "no_change_rerun")


BENCH_ARGS = ("--customers", "3000", "--days", "540", "--seed", "5", "--memory-limit", "2GB")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """The quick mode, measured in two sittings the way the 100M run is: `--stop-after
    baselines`, then `--resume` for the rest. Returns the first sitting's results too."""
    root = tmp_path_factory.mktemp("bench")
    dirs = ("--data-dir", str(root / "data"), "--results-dir", str(root / "results"))
    first = run_cli("bench", *BENCH_ARGS, *dirs, "--stop-after", "baselines", timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    files = sorted((root / "results").glob("*.json"))
    assert len(files) == 1, files
    partial = json.loads(files[0].read_text())
    result = run_cli("bench", *BENCH_ARGS, *dirs, "--resume", timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted((root / "results").glob("*.json")) == files  # the same file, completed
    return root, result, json.loads(files[0].read_text()), files[0], first, partial


@pytest.mark.dbt
def test_every_stage_is_measured(bench_run):
    _, _, results, *_ = bench_run
    assert results["complete"] is True
    assert set(results["stages"]) == set(STAGES)
    for name in STAGES:
        stage = results["stages"][name]
        assert stage["seconds"] > 0, name
        assert stage["peak_rss_bytes"] > 10 * 2**20, name  # a Python process tree, at least
    params = results["parameters"]
    assert results["stages"]["generate"]["events"] == params["events"] + params["next_day_events"]
    assert params["next_day_events"] > 0
    assert results["stages"]["incremental_refresh"]["new_events"] == params["next_day_events"]
    for name in PIPELINE_STAGES:
        stage = results["stages"][name]
        assert stage["returncode"] == 0 and stage["events_per_second"] > 0, name
        assert stage["events"] >= params["events"]
    # the export alone wrote as many records as the full refresh did
    export = results["stages"]["export"]
    assert export["records"] == results["stages"]["full_refresh"]["records"]
    assert export["records_per_second"] > 0
    for name in ("full_refresh", "incremental_refresh"):
        stage = results["stages"][name]
        assert not stage["dbt_skipped"] and not stage["export_reused"], name
        assert stage["records"] > 0, name
        dbt = stage["dbt"]  # dbt's own timings were read; the feature layer is part of them
        assert 0 < dbt["feature_layer_seconds"] <= dbt["models_seconds"], name
        assert dbt["slowest_models"], name
        # every model's time is kept (the Markdown shows the slowest; growth needs them all)
        assert len(dbt["model_seconds"]) == dbt["models"] > len(dbt["slowest_models"]), name
        assert dbt["slowest_models"].items() <= dbt["model_seconds"].items(), name


@pytest.mark.dbt
def test_the_no_change_rerun_skips_dbt_and_reuses_the_export(bench_run):
    """Nothing changed after the incremental refresh: `run --if-changed` neither rebuilds nor
    re-exports (the reused batch's checksums are verified instead)."""
    _, _, results, *_ = bench_run
    stage = results["stages"]["no_change_rerun"]
    assert stage["dbt_skipped"] is True
    assert stage["export_reused"] is True
    assert stage["dbt"] == {}  # dbt did not run, so no run_results were written
    assert stage["records"] is None  # no new export line: the batch was reused


@pytest.mark.dbt
def test_baselines_ran_on_the_same_data(bench_run):
    _, _, results, *_ = bench_run
    base = results["baselines"]
    assert set(base) == {"raw_duckdb", "pandas", "lifetimes"}
    for name, b in base.items():
        assert b["seconds"] > 0, name
        assert b["process"]["returncode"] == 0 and b["process"]["peak_rss_bytes"] > 0, name
    raw = base["raw_duckdb"]
    # the raw SQL read exactly the events the full refresh read, at every snapshot date
    assert raw["events"] == results["parameters"]["events"]
    assert raw["as_of_dates"] == results["parameters"]["as_of_dates"] > 1
    assert raw["rfm_rows"] > 0 and raw["affinity_rows"] > 0
    assert raw["snapshot_rows"] > raw["rfm_rows"]
    assert base["pandas"]["rfm_rows"] == raw["rfm_rows"]  # same RFM population both ways
    lt = base["lifetimes"]
    assert lt["ours_seconds"] > 0 and lt["customers"] > 0
    assert (
        set(lt["params_ours"])
        == set(lt["params_lifetimes"])
        == {"r", "alpha", "a", "b", "p", "q", "v"}
    )
    # both fitters find the same optimum (the bar is 0.1%)
    assert lt["max_relative_param_difference"] < 1e-3


@pytest.mark.dbt
def test_ratios_targets_and_markdown(bench_run):
    _, result, results, path, *_ = bench_run
    ratios = results["ratios"]
    for key in (
        "feature_layer_vs_raw_duckdb",
        "incremental_vs_full",
        "no_change_vs_full",
        "clv_speedup_vs_lifetimes",
        "export_seconds",
        "export_seconds_per_million",
        "peak_rss_gb",
    ):
        assert ratios[key] is not None and ratios[key] > 0, key
    assert len(results["targets"]) == 9
    # a tiny run is judged only on the ratios; the absolute targets are stated for 20M events
    judged = {t["key"]: t["met"] for t in results["targets"]}
    assert judged["full_refresh_seconds"] is None and judged["export_seconds_per_million"] is None
    export = results["stages"]["export"]
    assert ratios["export_seconds_per_million"] == pytest.approx(
        export["seconds"] * 1e6 / export["records"], rel=1e-3
    )
    assert judged["no_change_vs_full"] in (True, False)
    assert judged["clv_speedup_vs_lifetimes"] in (True, False)
    machine = results["machine"]
    assert machine["logical_cores"] > 0 and machine["memory_bytes"] > 0
    assert machine["versions"]["duckdb"] and machine["versions"]["dbt-core"]
    assert len(results["load_average"]["start"]) == 3
    # which code was measured: the checkout's commit (+changes when the work tree differs)
    assert re.fullmatch(r"[0-9a-f]{12}(\+changes)?", results["code_version"] or ""), results
    assert path.stem.endswith("-c3000-d540-m2GB")  # not the default size, history or memory
    md = path.with_suffix(".md").read_text()
    assert "| full refresh (`run`: dbt build from empty + export + validation) |" in md
    assert "vs raw DuckDB SQL" in md and "vs lifetimes" in md
    assert md in result.stdout  # the CLI prints the same table


@pytest.mark.dbt
def test_second_run_reuses_the_cached_data(bench_run):
    """Generation is cached by parameters, with the measurement taken when it was generated."""
    from profile_enrichment.bench.harness import prepare_data

    root, _, results, *_ = bench_run
    cache = next((root / "data").iterdir())
    first = results["stages"]["generate"]
    assert first["cached"] is False
    generated = cache / "generated" / "_generator.json"
    before = generated.stat().st_mtime_ns
    messages: list[str] = []
    data = prepare_data(
        cache,
        customers=3000,
        days=540,
        seed=5,
        activity_scale=results["parameters"]["activity_scale"],
        project_dir=PROJECT_DIR,
        env=_env(),
        echo=messages.append,
    )
    assert data.generate["cached"] is True
    assert data.generate["events"] == first["events"]
    assert data.base_events == results["parameters"]["events"]
    assert generated.stat().st_mtime_ns == before  # not regenerated
    assert any("cached" in m for m in messages)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory-limit", "lots"], "--memory-limit must look like 8GB"),
        (["--days", "3"], "--days must be at least 7"),
        (["--days", "4000"], "reaches past today"),
        (["--engines", "oracle"], "unknown engine(s) ['oracle']"),
        (["--resume"], "nothing to resume: no incomplete run of this size"),
    ],
)
def test_bench_user_mistakes_are_one_line(args, message, tmp_path):
    result = run_cli(
        "bench", "--customers", "10", "--data-dir", str(tmp_path), *args, "--results-dir",
        str(tmp_path / "r"),
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_bounded_rows_samples_whole_customers_only_above_the_cap():
    import duckdb

    from profile_enrichment.ml.workflows import MLConfig, bounded_rows, latest_snapshot

    con = duckdb.connect()
    rel = con.sql(
        "select 'c' || (i % 1000) as customer_id, date '2025-01-01' + cast(i // 1000 as integer) as as_of_date, "
        "i as value from range(6000) t(i)"
    )
    everything = bounded_rows(rel, MLConfig(artifacts_dir=PROJECT_DIR, as_of_date="2025-02-01"))
    assert len(everything) == 6000
    small = MLConfig(artifacts_dir=PROJECT_DIR, as_of_date="2025-02-01", max_training_rows=1500)
    sample = bounded_rows(rel, small)
    assert 900 <= len(sample) <= 2100  # ~the cap, in whole customers
    per_customer = sample.groupby("customer_id").size()
    assert (per_customer == 6).all()  # every snapshot of a sampled customer is kept
    again = bounded_rows(rel, small)
    assert sorted(again["value"]) == sorted(sample["value"])  # deterministic
    projected = bounded_rows(rel, small, "value")
    assert list(projected.columns) == ["value"] and len(projected) == len(sample)
    latest = latest_snapshot(rel)
    assert len(latest) == 1000 and (latest["as_of_date"] == latest["as_of_date"].max()).all()


def test_code_version_names_the_commit_and_says_when_the_tree_differs(tmp_path):
    from profile_enrichment.bench.harness import code_version

    assert code_version(tmp_path) is None  # not a git checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.sql").write_text("select 1\n")
    subprocess.run([*git, "-C", str(tmp_path), "add", "a.sql"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-q", "-m", "a"], check=True)
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert code_version(tmp_path) == head
    (tmp_path / "a.sql").write_text("select 2\n")
    assert code_version(tmp_path) == f"{head}+changes"


@pytest.mark.dbt
def test_a_run_stopped_after_a_stage_is_resumed_without_remeasuring(bench_run):
    """--stop-after leaves an incomplete file; --resume measures only the missing stages."""
    _, result, results, path, first, partial = bench_run
    assert partial["complete"] is False and partial["in_progress"] is None
    assert set(partial["stages"]) == {"generate", "full_refresh", "export"}
    assert set(partial["baselines"]) == {"raw_duckdb", "pandas", "lifetimes"}
    assert "stopped after baselines" in first.stdout
    assert "**Incomplete run**" in first.stdout
    # what the first sitting measured is kept as it was, not measured again
    for name in ("full_refresh", "export"):
        assert results["stages"][name] == partial["stages"][name], name
    assert results["baselines"] == partial["baselines"]
    assert "resuming " + path.name in result.stdout
    assert "full refresh: dbt build" not in result.stdout
    sittings = results["sittings"]
    assert [s["stages"] for s in sittings] == [
        ["full_refresh", "baselines"],
        ["incremental_refresh", "no_change_rerun"],
    ]
    assert results["started_at"] == partial["started_at"]
    assert results["in_progress"] is None
    assert "Measured in 2 sittings" in path.with_suffix(".md").read_text()


def _incomplete(results_dir, **changes):
    """An incomplete results file as `--stop-after full_refresh` leaves it."""
    from profile_enrichment.bench.harness import _results_name, machine_info

    results = {
        "complete": False,
        "code_version": "0123456789ab",
        "in_progress": None,
        "started_at": "2026-11-28T10:00:00+00:00",
        "parameters": {
            "customers": 3000,
            "days": 540,
            "seed": 5,
            "activity_scale": 0.065,
            "duckdb_memory_limit": "2GB",
        },
        "stages": {"generate": {}, "full_refresh": {}},
        "baselines": {},
    } | changes
    results_dir.mkdir(exist_ok=True)
    path = results_dir / f"2026-11-28-{_results_name(3000, 540, machine_info())}.json"
    path.write_text(json.dumps(results))
    return path


@pytest.mark.parametrize(
    ("changes", "code", "message"),
    [
        ({}, "0123456789ab", None),
        ({}, "fedcba987654", "it measured code 0123456789ab, this checkout is fedcba987654"),
        ({}, "0123456789ab+changes", "this checkout is 0123456789ab+changes"),
        ({"code_changes_digest": "ab12"}, "0123456789ab", "(with other uncommitted changes)"),
        ({"in_progress": "incremental_refresh"}, "0123456789ab", "stage was interrupted"),
        ({"in_progress": "full_refresh"}, "0123456789ab", "stage was interrupted"),
        ({"stages": {"generate": {}}}, "0123456789ab", "nothing to resume"),
        ({"complete": True}, "0123456789ab", "nothing to resume"),
        (
            {"parameters": {"customers": 3000, "days": 540, "seed": 6, "activity_scale": 0.065}},
            "0123456789ab",
            "nothing to resume",
        ),
    ],
)
def test_resume_refuses_what_it_cannot_continue_honestly(tmp_path, changes, code, message):
    from profile_enrichment.bench.harness import _results_name, find_resumable, machine_info
    from profile_enrichment.errors import UserError

    path = _incomplete(tmp_path, **changes)
    wanted = {
        "customers": 3000,
        "days": 540,
        "seed": 5,
        "activity_scale": 0.065,
        "duckdb_memory_limit": "2GB",
    }
    name = _results_name(3000, 540, machine_info())
    if message is None:
        results, found = find_resumable(tmp_path, name, wanted, code)
        assert found == path and results["code_version"] == code
        return
    with pytest.raises(UserError, match=re.escape(message)):
        find_resumable(tmp_path, name, wanted, code)


def test_resume_refuses_another_memory_limit(tmp_path):
    from profile_enrichment.bench.harness import _results_name, find_resumable, machine_info
    from profile_enrichment.errors import UserError

    _incomplete(tmp_path)
    wanted = {"customers": 3000, "days": 540, "seed": 5, "activity_scale": 0.065}
    name = _results_name(3000, 540, machine_info())
    with pytest.raises(UserError, match="memory_limit 2GB, not 8GB"):
        find_resumable(tmp_path, name, wanted | {"duckdb_memory_limit": "8GB"}, "0123456789ab")


def test_a_stop_point_counts_as_measured_only_when_all_of_it_is():
    """What --resume skips: the baselines only when all three were measured (one left over
    from an interrupted sitting is measured then), the refreshes when they are in the stages."""
    from profile_enrichment.bench.harness import measured_stop_points

    assert measured_stop_points({}, {}) == []
    full = {"generate": {}, "full_refresh": {}, "export": {}}
    assert measured_stop_points(full, {"raw_duckdb": {}, "pandas": {}}) == ["full_refresh"]
    three = {"raw_duckdb": {}, "pandas": {}, "lifetimes": {}}
    assert measured_stop_points(full, three) == ["full_refresh", "baselines"]
    night = full | {"incremental_refresh": {}}
    assert measured_stop_points(night, three) == [
        "full_refresh",
        "baselines",
        "incremental_refresh",
    ]


@pytest.mark.dbt
def test_a_failed_stage_is_kept_in_the_results_with_its_cost_and_error(tmp_path):
    """A stage that fails (here: DuckDB given 1 MB) still leaves its time, its peak RSS and
    dbt's error in the results, which refuse a --resume; the CLI says so in one line."""
    args = ("--customers", "300", "--days", "60", "--seed", "5", "--memory-limit", "1MB")
    dirs = ("--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"))
    result = run_cli("bench", *args, *dirs, timeout=900)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bench stage full_refresh: ")
    assert "the pipeline run failed after" in lines[0]
    (path,) = sorted((tmp_path / "results").glob("*.json"))
    results = json.loads(path.read_text())
    assert results["failed_stage"] == "full_refresh" and results["complete"] is False
    stage = results["stages"]["full_refresh"]
    assert stage["failed"] is True and stage["returncode"] != 0
    assert stage["seconds"] > 0 and stage["peak_rss_bytes"] > 0
    assert any("memory" in line.lower() for line in stage["error"]), stage["error"]
    # a failed stage is not a measured full refresh: no target is judged on it
    assert results["ratios"]["full_refresh_seconds"] is None
    md = path.with_suffix(".md").read_text()
    assert "| **failed** after" in md and "**Failed run**" in md
    again = run_cli("bench", *args, *dirs, "--resume", timeout=300)
    assert again.returncode == 2
    assert "its full_refresh stage failed" in again.stderr
