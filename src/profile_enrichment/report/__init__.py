"""The self-contained HTML model report (``profile-enrichment report``)."""

from profile_enrichment.report.build import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
