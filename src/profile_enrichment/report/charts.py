"""The report's charts: matplotlib figures from small aggregate frames, returned as inline SVG.

Text stays text (``svg.fonttype = none``), so charts are small and crisp; each SVG gets its own
id salt, so several inline SVGs never share clip-path ids, and output is deterministic.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.ticker import MaxNLocator

BLUE, ORANGE, GREY, RED, GREEN = "#1f5f99", "#d9822b", "#8a8a8a", "#c0392b", "#2e8b57"
BUCKET_COLORS = {"low": "#9ecae1", "medium": "#4292c6", "high": "#08306b"}
STYLE = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e5e5",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "figure.dpi": 100,
}


@contextmanager
def figure(name: str, size: tuple[float, float] = (4.0, 3.0), **kwargs: Any) -> Iterator[Any]:
    """A figure with the report style; the caller draws on the yielded (fig, axes)."""
    with plt.rc_context({**STYLE, "svg.hashsalt": name}):
        fig, axes = plt.subplots(figsize=size, layout="constrained", **kwargs)
        try:
            yield fig, axes
        finally:
            plt.close(fig)


def to_svg(fig: Any, name: str) -> str:
    """The figure as an <svg> element (no XML prolog, no date), ready to inline."""
    buf = io.StringIO()
    with plt.rc_context({**STYLE, "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    # A readable accessible name for screen readers and for the browser test.
    return re.sub(r"<svg ", f'<svg role="img" aria-label="{name}" ', svg, count=1)


def render(name: str, draw: Any, size: tuple[float, float] = (4.0, 3.0), **kwargs: Any) -> str:
    with figure(name, size, **kwargs) as (fig, axes):
        draw(fig, axes)
        return to_svg(fig, name)


def empty(name: str, message: str) -> str:
    """A placeholder panel that says why there is no chart."""
    import textwrap

    def draw(fig: Any, ax: Any) -> None:
        ax.axis("off")
        text = "\n".join(textwrap.wrap(message, 60)[:8])
        ax.text(0.5, 0.5, text, ha="center", va="center", color="#555555")

    return render(name, draw, size=(4.0, 1.6))


# --------------------------------------------------------------------------------------------
# propensity
# --------------------------------------------------------------------------------------------
def roc(name: str, curve: pd.DataFrame, auc: float | None) -> str:
    def draw(fig: Any, ax: Any) -> None:
        fpr = np.r_[0.0, curve["fpr"].to_numpy()]
        tpr = np.r_[0.0, curve["tpr"].to_numpy()]
        label = "model" if auc is None else f"model (ROC AUC {auc:.3f})"
        ax.plot(fpr, tpr, color=BLUE, lw=1.8, label=label)
        ax.plot([0, 1], [0, 1], color=GREY, lw=1, ls="--", label="random")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1.01),
            xlabel="false positive rate",
            ylabel="true positive rate",
            title="ROC curve (validation snapshot)",
        )
        ax.legend(loc="lower right")

    return render(name, draw)


def precision_recall(name: str, curve: pd.DataFrame, pr_auc: float | None) -> str:
    def draw(fig: Any, ax: Any) -> None:
        base = float(curve["base_rate"].iloc[0]) if not curve.empty else 0.0
        label = "model" if pr_auc is None else f"model (PR AUC {pr_auc:.3f})"
        ax.plot(curve["tpr"], curve["precision"], color=BLUE, lw=1.8, label=label)
        ax.axhline(base, color=GREY, lw=1, ls="--", label=f"base rate {base:.1%}")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1.01),
            xlabel="recall (share of positives found)",
            ylabel="precision",
            title="Precision-recall (validation snapshot)",
        )
        ax.legend(loc="lower left")

    return render(name, draw)


def gains_chart(name: str, gains: pd.DataFrame) -> str:
    def draw(fig: Any, ax: Any) -> None:
        x = np.r_[0.0, gains["targeted"].to_numpy()] * 100
        y = np.r_[0.0, gains["captured"].to_numpy()] * 100
        ax.plot(x, y, color=BLUE, lw=1.8, label="model")
        ax.plot([0, 100], [0, 100], color=GREY, lw=1, ls="--", label="random")
        top10 = float(np.interp(10, x, y))
        # Below the diagonal, where a useful model's curve never goes, left of the legend.
        ax.annotate(
            f"top 10% →\n{top10:.0f}% of positives",
            xy=(10, top10),
            xytext=(38, 6),
            fontsize=7.5,
            arrowprops={"arrowstyle": "->", "color": GREY},
        )
        ax.set(
            xlim=(0, 100),
            ylim=(0, 101),
            xlabel="customers targeted, highest probability first (%)",
            ylabel="positives captured (%)",
            title="Cumulative gains",
        )
        ax.legend(loc="lower right")

    return render(name, draw)


def lift_chart(name: str, deciles: pd.DataFrame) -> str:
    def draw(fig: Any, ax: Any) -> None:
        bars = ax.bar(deciles["decile"], deciles["lift"], color=BLUE, width=0.7)
        ax.axhline(1.0, color=GREY, lw=1, ls="--", label="no lift (base rate)")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
        ax.set(
            xticks=range(1, 11),
            xlabel="probability decile (1 = highest 10%)",
            ylabel="lift (decile rate / base rate)",
            title="Decile lift",
        )
        ax.legend(loc="upper right")

    return render(name, draw)


def calibration(name: str, deciles: pd.DataFrame) -> str:
    def draw(fig: Any, ax: Any) -> None:
        hi = float(max(deciles["mean_probability"].max(), deciles["observed_rate"].max(), 0.05))
        hi = min(1.0, hi * 1.08)
        ax.plot([0, hi], [0, hi], color=GREY, lw=1, ls="--", label="perfectly calibrated")
        ax.plot(
            deciles["mean_probability"],
            deciles["observed_rate"],
            color=ORANGE,
            marker="o",
            lw=1.5,
            label="model (10 equal-size bins)",
        )
        ax.set(
            xlim=(0, hi),
            ylim=(0, hi),
            xlabel="mean predicted probability",
            ylabel="observed rate",
            title="Calibration (reliability)",
        )
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.yaxis.set_major_locator(MaxNLocator(5))
        ax.legend(loc="upper left")

    return render(name, draw)


def score_histogram(name: str, dist: pd.DataFrame, title: str) -> str:
    def draw(fig: Any, ax: Any) -> None:
        for bucket in ("low", "medium", "high"):
            part = dist[dist["bucket"] == bucket]
            if part.empty:
                continue
            total = int(part["customers"].sum())
            ax.bar(
                part["score"],
                part["customers"],
                width=1.0,
                color=BUCKET_COLORS[bucket],
                label=f"{bucket} ({total:,})",
            )
        ax.set(
            xlim=(-1, 101),
            xlabel="score (0-100 = calibrated probability in %)",
            ylabel="customers",
            title=title,
        )
        ax.legend(title="bucket", loc="upper left")

    return render(name, draw)


def factor_chart(name: str, factors: pd.DataFrame) -> str:
    def draw(fig: Any, ax: Any) -> None:
        data = factors.iloc[::-1]
        y = np.arange(len(data))
        inc = data["share_increases"].to_numpy() * 100
        dec = data["share_decreases"].to_numpy() * 100
        ax.barh(y, inc, color=RED, label="raises the probability")
        ax.barh(y, dec, left=inc, color=BLUE, label="lowers the probability")
        ax.set_yticks(y, data["code"])
        ax.set(
            xlabel="% of customers with it in their top 3",
            title="Global top factors",
        )
        ax.grid(axis="y", visible=False)
        ax.legend(loc="lower right")

    return render(name, draw, size=(4.0, 0.9 + 0.24 * max(len(factors), 3)))


# --------------------------------------------------------------------------------------------
# lifetime value
# --------------------------------------------------------------------------------------------
def clv_tracking(
    name: str,
    days: pd.DatetimeIndex,
    predicted: np.ndarray,
    actual: pd.DataFrame,
    calibration_end: pd.Timestamp | None,
) -> str:
    def draw(fig: Any, ax: Any) -> None:
        ax.plot(days, predicted, color=ORANGE, lw=1.8, ls="--", label="BG/NBD expected")
        ax.plot(
            pd.to_datetime(actual["as_of_date"]),
            actual["repeat_purchases"],
            color=BLUE,
            marker="o",
            ms=3,
            lw=1.5,
            label="actual (monthly snapshots)",
        )
        if calibration_end is not None:
            ax.axvline(calibration_end, color=GREY, lw=1, ls=":")
            ax.text(
                calibration_end,
                ax.get_ylim()[1] * 0.97,
                " end of calibration →\n holdout",
                fontsize=7,
                va="top",
                color="#555555",
            )
        ax.set(
            xlabel="date",
            ylabel="cumulative repeat purchase days",
            title="Tracking cumulative repeat transactions",
        )
        ax.legend(loc="lower right")
        fig.autofmt_xdate()

    return render(name, draw)


def clv_conditional(name: str, by_frequency: pd.DataFrame, cap: int, days: int) -> str:
    def draw(fig: Any, ax: Any) -> None:
        x = by_frequency["frequency"].to_numpy()
        ax.plot(x, by_frequency["actual_mean"], color=BLUE, marker="o", label="actual")
        ax.plot(
            x,
            by_frequency["predicted_mean"],
            color=ORANGE,
            marker="s",
            ls="--",
            label="BG/NBD predicted",
        )
        labels = [str(v) if v < cap else f"{cap}+" for v in x]
        ax.set_xticks(x, labels)
        ax.set(
            xlabel="repeat purchase days in the calibration period",
            ylabel=f"mean repeat purchase days, next {days} d",
            title="Calibration vs holdout, by frequency",
        )
        ax.legend(loc="upper left")

    return render(name, draw)


def clv_alive_heatmap(name: str, grid: pd.DataFrame, cap: int) -> str:
    def draw(fig: Any, ax: Any) -> None:
        freq = np.arange(0, cap + 1)
        months = np.arange(0, int(grid["recency_month"].max()) + 1 if not grid.empty else 1)
        matrix = np.full((freq.size, months.size), np.nan)
        for row in grid.itertuples():
            matrix[int(row.frequency), int(row.recency_month)] = row.p_alive
        image = ax.imshow(
            matrix,
            origin="lower",
            aspect="auto",
            cmap="viridis",
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        ax.set_yticks(freq[::3], [str(v) if v < cap else f"{cap}+" for v in freq[::3]])
        ax.set(
            xlabel="months from first to last purchase (recency t_x)",
            ylabel="repeat purchase days (frequency x)",
            title="P(alive) by frequency and recency",
        )
        ax.grid(False)
        fig.colorbar(image, ax=ax, label="mean P(alive)")

    return render(name, draw)


def clv_distribution(name: str, hist: pd.DataFrame) -> str:
    def draw(fig: Any, ax: Any) -> None:
        currency = str(hist["currency"].iloc[0]) if not hist.empty else ""
        width = float(hist["upper"].iloc[0] - hist["lower"].iloc[0]) if not hist.empty else 1
        ax.bar(hist["lower"], hist["customers"], width=width, align="edge", color=GREEN)
        ax.set(
            xlabel=f"predicted CLV ({currency}); last bar: the top 1%",
            ylabel="customers",
            title="Distribution of predicted CLV",
        )

    return render(name, draw)


# --------------------------------------------------------------------------------------------
# segments, affinity, drift
# --------------------------------------------------------------------------------------------
def segment_sizes(name: str, sizes: pd.DataFrame) -> str:
    def draw(fig: Any, ax: Any) -> None:
        data = sizes.iloc[::-1]
        labels = [f"{r.segment_id}. {r.segment_name}" for r in data.itertuples()]
        bars = ax.barh(labels, data["customers"], color=BLUE)
        ax.bar_label(bars, labels=[f"{v:,}" for v in data["customers"]], fontsize=7, padding=2)
        ax.set(xlabel="customers", title="Segment sizes")
        ax.grid(axis="y", visible=False)

    return render(name, draw, size=(4.0, 0.9 + 0.3 * max(len(sizes), 3)))


def segment_profiles(name: str, profiles: pd.DataFrame, sizes: pd.DataFrame) -> str:
    segments = sizes["segment_id"].tolist()
    n = max(len(segments), 1)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    n_features = profiles["feature"].nunique()

    def draw(fig: Any, axes: Any) -> None:
        flat = np.atleast_1d(axes).ravel()
        lim = float(np.nanmax(np.abs(profiles["z"]))) if not profiles.empty else 1.0
        lim = max(1.0, min(lim * 1.1, 4.0))
        for ax, seg in zip(flat, segments, strict=False):
            part = profiles[profiles["segment_id"] == seg].sort_values("order", ascending=False)
            z = part["z"].clip(-lim, lim)
            ax.barh(part["feature"], z, color=[RED if v > 0 else BLUE for v in z])
            ax.axvline(0, color="#444444", lw=0.8)
            name_ = sizes.loc[sizes["segment_id"] == seg, "segment_name"].iloc[0]
            ax.set_title(f"{seg}. {name_}", fontsize=9)
            ax.set_xlim(-lim, lim)
            ax.grid(axis="y", visible=False)
            ax.set_xlabel("z-score vs all", fontsize=8)
            if ax is not flat[0] and ax is not flat[min(cols, len(flat) - 1)]:
                pass
        for ax in flat[len(segments) :]:
            ax.axis("off")

    return render(
        name,
        draw,
        size=(2.4 * cols + 1.4, (0.9 + 0.2 * n_features) * rows),
        nrows=rows,
        ncols=cols,
        sharey=True,
        squeeze=False,
    )


def category_bars(name: str, popularity: pd.DataFrame) -> str:
    def draw(fig: Any, ax: Any) -> None:
        data = popularity.iloc[::-1]
        ax.barh(data["category_name"], data["in_top_n"], color="#9ecae1", label="in top N")
        ax.barh(data["category_name"], data["ranked_first"], color=BLUE, label="ranked first")
        ax.set(xlabel="customers", title="Category popularity")
        ax.grid(axis="y", visible=False)
        ax.legend(loc="lower right")

    return render(name, draw, size=(4.0, 0.9 + 0.24 * max(len(popularity), 3)))


def coaffinity_heatmap(name: str, pairs: pd.DataFrame, order: list[str]) -> str:
    def draw(fig: Any, ax: Any) -> None:
        index = {c: i for i, c in enumerate(order)}
        matrix = np.full((len(order), len(order)), np.nan)
        for row in pairs.itertuples():
            if row.category_a in index and row.category_b in index:
                matrix[index[row.category_a], index[row.category_b]] = row.lift
        hi = float(np.nanmax(matrix)) if np.isfinite(matrix).any() else 2.0
        norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=max(2.0, hi))
        image = ax.imshow(matrix, cmap="RdBu_r", norm=norm, interpolation="nearest")
        for i in range(len(order)):
            for j in range(len(order)):
                if np.isfinite(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.1f}", ha="center", va="center", fontsize=6)
        ax.set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(order)), order, fontsize=7)
        ax.grid(False)
        ax.set_title("Co-affinity (lift)")
        fig.colorbar(image, ax=ax, label="lift (1 = independent)")

    return render(name, draw, size=(5.0, 4.4))


def drift_bars(name: str, drift: pd.DataFrame, threshold: float) -> str:
    def draw(fig: Any, ax: Any) -> None:
        data = drift.iloc[::-1]
        colors = [RED if d else BLUE for d in data["is_drifted"]]
        ax.barh(data["feature"], data["psi"].fillna(0), color=colors)
        ax.axvline(threshold, color=RED, lw=1, ls="--", label=f"threshold {threshold:g}")
        ax.set(xlabel="population stability index (PSI)", title="Feature drift")
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(loc="lower right")

    return render(name, draw, size=(4.0, 0.9 + 0.17 * max(len(drift), 3)))
