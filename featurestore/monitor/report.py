"""The drift report of a view version: its baseline against the consumer's current
window, as rows for a terminal table and as one self-contained HTML file with a PNG
chart per feature and input field (baseline and current shares side by side).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from featurestore.errors import import_extra
from featurestore.features.definitions import FeatureView
from featurestore.monitor.drift import Baseline
from featurestore.monitor.profile import Profile


@dataclass(frozen=True)
class Row:
    name: str  # feature, or "input <field>"
    kind: str
    count: int
    stats: dict[str, float]
    breached: list[str]  # statistics over their threshold


def rows(view: FeatureView, baseline: Baseline, current: dict[str, Any] | None) -> list[Row]:
    """One row per feature and input field that has a current window."""
    out = []
    for label, entry in sorted(((current or {}).get("profiles") or {}).items()):
        name = label.removeprefix("input ")
        stats = entry["stats"]
        enough = entry["count"] >= view.drift.min_count
        breached = [s for s, v in stats.items() if enough and v > view.drift.threshold(name, s)]
        kind = Profile.from_dict(entry["current"]).kind
        out.append(Row(label, kind, entry["count"], stats, breached))
    return out


def render_html(view: FeatureView, baseline: Baseline, current: dict[str, Any] | None) -> str:
    """The report as one HTML page (charts embedded as base64 PNGs)."""
    matplotlib = import_extra("matplotlib", "report", "the drift report's charts")
    matplotlib.use("Agg")
    profiles = (current or {}).get("profiles") or {}
    sections = []
    for row in rows(view, baseline, current):
        name = row.name.removeprefix("input ")
        base = (baseline.inputs if row.name.startswith("input ") else baseline.features)[name]
        now = Profile.from_dict(profiles[row.name]["current"])
        stats = ", ".join(f"{k} {v:.3f}" for k, v in row.stats.items())
        flag = f" — <b>drifted: {', '.join(row.breached)}</b>" if row.breached else ""
        sections.append(
            f"<section><h2>{html.escape(row.name)}</h2><p>{row.count:,} current values; "
            f"{html.escape(stats)}{flag}</p><img alt='{html.escape(row.name)} baseline vs "
            f"current' src='data:image/png;base64,{_chart(row.name, base, now)}'/></section>"
        )
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    period = " to ".join(datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%d %H:%M")
                         for t in (baseline.start, baseline.end))  # fmt: skip
    window = (current or {}).get("window", "-")
    body = "\n".join(sections) or "<p>No current window yet: is the consumer running?</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Drift of {html.escape(view.name)} v{view.version}</title>"
        "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}"
        "section{border-top:1px solid #ccc;padding:1em 0}img{max-width:100%}</style>"
        f"</head><body><h1>Drift of {html.escape(view.name)} v{view.version}</h1>"
        f"<p>Owner: {html.escape(view.owner)}. Baseline: {baseline.rows:,} rows, {period}. "
        f"Current window: last {html.escape(str(window))}. Made {made}.</p>{body}</body></html>"
    )


def _chart(title: str, base: Profile, now: Profile) -> str:
    import matplotlib.pyplot as plt

    if base.kind == "numeric":
        edges = [f"{e:.3g}" for e in base.edges]
        labels = [f"< {edges[0]}" if edges else "all",
                  *[f"{a}-{b}" for a, b in itertools.pairwise(edges)],
                  *([f">= {edges[-1]}"] if edges else [])]  # fmt: skip
        left, right = base.shares, now.shares
    else:
        labels = list(base.categories)
        left = [base.categories[c] for c in labels]
        right = [now.categories.get(c, 0.0) for c in labels]
    figure, axes = plt.subplots(figsize=(8, 3))
    x = range(len(labels))
    axes.bar([i - 0.2 for i in x], left, width=0.4, label="baseline")
    axes.bar([i + 0.2 for i in x], right, width=0.4, label="current")
    axes.set_xticks(list(x), labels, rotation=45, ha="right", fontsize=7)
    axes.set_ylabel("share")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()
