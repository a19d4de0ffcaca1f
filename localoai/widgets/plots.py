"""The inspector's plots as inline SVG, computed from records: no plotting library, no JavaScript.

What a researcher watching a run would rather look at than read: reward by policy version (per
GRPO group: mean, and min-max spread), generations per second, latency and requests in flight
over time, token staleness (tokens sampled under an older policy version than the current one),
finish reasons and tool-call parsing. Pure functions, so the `/ui` page, the widget and tests
share them; the page re-fetches them whenever the store changes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from localoai.store.episodes import StoredEpisode
from localoai.store.records import GenerationRecord
from localoai.widgets.format import tool_names
from localoai.widgets.tokens import policy_version_at

WIDTH, HEIGHT = 360, 190
LEFT, RIGHT, TOP, BOTTOM = 46, 10, 24, 30
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")

Point = tuple[float, float]


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[Point]
    spreads: Sequence[tuple[float, float, float]] = ()
    """(x, low, high) vertical bars drawn behind the points (a group's min-max)."""
    line: bool = True


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _frame(title: str, body: str, x_label: str, y_label: str, ranges: tuple[float, float, float, float] | None,
           legend: Sequence[str] = ()) -> str:
    parts = [f'<svg class="loai-plot" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10">',
             f'<title>{escape(title)}</title><text x="{LEFT}" y="13" font-size="12" font-weight="bold">'
             f"{escape(title)}</text>",
             f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" stroke="#888"/>',
             f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="#888"/>',
             f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 4}" text-anchor="middle" fill="#555">'
             f"{escape(x_label)}</text>",
             f'<text x="10" y="{(TOP + HEIGHT - BOTTOM) / 2}" text-anchor="middle" fill="#555" '
             f'transform="rotate(-90 10 {(TOP + HEIGHT - BOTTOM) / 2})">{escape(y_label)}</text>']
    if ranges is None:
        parts.append(f'<text x="{(LEFT + WIDTH) / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="#999">no data yet</text>')
    else:
        x0, x1, y0, y1 = ranges
        parts += [f'<text x="{LEFT - 3}" y="{HEIGHT - BOTTOM}" text-anchor="end">{_number(y0)}</text>',
                  f'<text x="{LEFT - 3}" y="{TOP + 8}" text-anchor="end">{_number(y1)}</text>',
                  f'<text x="{LEFT}" y="{HEIGHT - BOTTOM + 11}">{_number(x0)}</text>',
                  f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - BOTTOM + 11}" text-anchor="end">{_number(x1)}</text>']
        parts.append(body)
    for i, name in enumerate(legend):
        parts.append(f'<text x="{WIDTH - RIGHT}" y="{TOP + 10 + 11 * i}" text-anchor="end" '
                     f'fill="{COLORS[i % len(COLORS)]}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def xy_chart(title: str, series: Sequence[Series], x_label: str, y_label: str) -> str:
    """Points (joined by a line unless `line=False`) and spread bars, on shared linear axes from 0."""
    xs = [x for s in series for x, _ in s.points] + [x for s in series for x, _, _ in s.spreads]
    ys = [y for s in series for _, y in s.points] + [v for s in series for _, lo, hi in s.spreads for v in (lo, hi)]
    if not xs:
        return _frame(title, "", x_label, y_label, None)
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(0.0, min(ys)), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def at(x: float, y: float) -> str:
        px = LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - RIGHT)
        py = HEIGHT - BOTTOM - (y - y0) / (y1 - y0) * (HEIGHT - TOP - BOTTOM)
        return f"{px:.1f},{py:.1f}"

    body = []
    for i, s in enumerate(series):
        color = COLORS[i % len(COLORS)]
        for x, lo, hi in s.spreads:
            (a, b), (c, d) = at(x, lo).split(","), at(x, hi).split(",")
            body.append(f'<line x1="{a}" y1="{b}" x2="{c}" y2="{d}" stroke="{color}" stroke-opacity="0.4" '
                        'stroke-width="5"/>')
        if s.line and len(s.points) > 1:
            body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                        f'points="{" ".join(at(x, y) for x, y in s.points)}"/>')
        for x, y in s.points:
            cx, cy = at(x, y).split(",")
            body.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"><title>{escape(s.name)}: '
                        f"{_number(x)}, {_number(y)}</title></circle>")
    legend = [s.name for s in series] if len(series) > 1 else []
    return _frame(title, "".join(body), x_label, y_label, (x0, x1, y0, y1), legend)


def bar_chart(title: str, counts: Mapping[str, float], y_label: str = "count") -> str:
    """One bar per key, in the mapping's order."""
    if not counts or not any(counts.values()):
        return _frame(title, "", "", y_label, None)
    top = max(counts.values())
    slot = (WIDTH - LEFT - RIGHT) / len(counts)
    body = []
    for i, (name, value) in enumerate(counts.items()):
        height = value / top * (HEIGHT - TOP - BOTTOM)
        x = LEFT + i * slot + slot * 0.15
        body.append(f'<rect x="{x:.1f}" y="{HEIGHT - BOTTOM - height:.1f}" width="{slot * 0.7:.1f}" '
                    f'height="{height:.1f}" fill="{COLORS[i % len(COLORS)]}"><title>{escape(name)}: '
                    f"{_number(value)}</title></rect>")
        body.append(f'<text x="{x + slot * 0.35:.1f}" y="{HEIGHT - BOTTOM + 11}" text-anchor="middle">'
                    f"{escape(name[:14])}</text>")
        body.append(f'<text x="{x + slot * 0.35:.1f}" y="{HEIGHT - BOTTOM - height - 2:.1f}" '
                    f'text-anchor="middle">{_number(value)}</text>')
    frame = _frame(title, "".join(body), "", y_label, (0, 0, 0, top))
    return frame.replace(f'<text x="{LEFT}" y="{HEIGHT - BOTTOM + 11}">0</text>', "").replace(
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - BOTTOM + 11}" text-anchor="end">0</text>', "")


# -- what the plots show -------------------------------------------------------------------------


def reward_by_version(records: Iterable[GenerationRecord], episodes: Iterable[StoredEpisode]) -> str:
    """Per GRPO group (or per episode without one), the mean reward at the policy version that sampled it."""
    version_of: dict[str, int] = {}
    for record in records:
        if record.episode_id:
            version_of.setdefault(record.episode_id, record.policy_version)
    rewards: dict[tuple[int, str], list[float]] = defaultdict(list)
    for episode in episodes:
        if episode.reward is not None and episode.id in version_of:
            rewards[(version_of[episode.id], episode.group or episode.id)].append(float(episode.reward))
    points = [(float(version), sum(values) / len(values)) for (version, _), values in sorted(rewards.items())]
    spreads = [(float(version), min(values), max(values)) for (version, _), values in sorted(rewards.items())]
    by_version: dict[int, list[float]] = defaultdict(list)
    for (version, _), values in rewards.items():
        by_version[version].append(sum(values) / len(values))
    means = [(float(v), sum(m) / len(m)) for v, m in sorted(by_version.items())]
    series = [Series("group mean (bar: min-max)", points, spreads, line=False), Series("mean over groups", means)]
    return xy_chart("Reward by policy version", series if points else [], "policy version", "reward")


def _intervals(records: Iterable[GenerationRecord]) -> list[tuple[float, float, float, float | None]]:
    """(start, admitted, end, first token) per finished generation, from its timings."""
    spans = []
    for record in records:
        total = record.timings.get("total")
        if total is None:
            continue
        start = float(record.created_at)
        first = record.timings.get("first_token")
        spans.append((start, start + float(record.timings.get("queued", 0.0)), start + float(total),
                      float(first) if first is not None else None))
    return sorted(spans)


def activity(records: Sequence[GenerationRecord], buckets: int = 30) -> list[str]:
    """Generations per second, latency, and requests queued or running, over the run's time (seconds from its first)."""
    spans = _intervals(records)
    if not spans:
        return [xy_chart(t, [], "seconds", y) for t, y in (("Generations per second", "gen/s"),
                                                           ("Latency", "seconds"), ("Requests waiting", "requests"))]
    origin = spans[0][0]
    last = max(end for _, _, end, _ in spans)
    width = max((last - origin) / buckets, 1e-3)
    done = Counter(min(buckets - 1, int((end - origin) / width)) for _, _, end, _ in spans)
    rate = [((i + 0.5) * width, done.get(i, 0) / width) for i in range(buckets)]
    latency = [Series("total", [(end - origin, end - start) for start, _, end, _ in spans], line=False),
               Series("first token", [(start + first - origin, first) for start, _, _, first in spans
                                      if first is not None], line=False)]
    events = sorted([(start - origin, +1, 0) for start, _, _, _ in spans] + [(admit - origin, -1, 0) for _, admit, _, _ in spans]
                    + [(admit - origin, +1, 1) for _, admit, _, _ in spans] + [(end - origin, -1, 1) for _, _, end, _ in spans])
    depth = [0, 0]
    queued, running = [(0.0, 0.0)], [(0.0, 0.0)]
    for time, step, which in events:  # drawn as steps: the depth holds until the next event
        series = (queued, running)[which]
        series.append((time, float(depth[which])))
        depth[which] += step
        series.append((time, float(depth[which])))
    return [
        xy_chart("Generations per second", [Series("finished", rate)], "seconds", "gen/s"),
        xy_chart("Latency", latency, "seconds (finish)", "seconds"),
        xy_chart("Requests waiting", [Series("queued", queued), Series("running", running)], "seconds", "requests"),
    ]


def staleness(records: Iterable[GenerationRecord], current: int) -> str:
    """Sampled tokens by how many versions older than `current` the policy that sampled them is."""
    counts: Counter[int] = Counter()
    for record in records:
        for trace in record.completions:
            spans = trace.get("policy_versions")
            for i in range(len(trace.get("completion_token_ids", []))):
                counts[max(0, current - policy_version_at(spans, i, record.policy_version))] += 1
    ordered = {("current" if lag == 0 else f"{lag} behind"): float(counts[lag]) for lag in sorted(counts)}
    return bar_chart(f"Token staleness (current v{current})", ordered, "tokens")


def outcomes(records: Iterable[GenerationRecord]) -> list[str]:
    """Finish reasons (failed and cancelled generations by status), and whether tool-call markup parsed."""
    reasons: Counter[str] = Counter()
    tools: Counter[str] = Counter()
    for record in records:
        if record.status in ("failed", "cancelled", "in_progress"):
            reasons[record.status] += 1
        for trace in record.completions:
            if record.status not in ("failed", "cancelled", "in_progress"):
                reasons[str(trace.get("finish_reason") or "none")] += 1
        if any(trace.get("tool_parse_error") for trace in record.completions):
            tools["unparsed"] += 1
        elif tool_names(record):
            tools["parsed"] += 1
    ordered_tools = {name: float(tools[name]) for name in ("parsed", "unparsed") if tools[name]}
    return [bar_chart("Finish reasons", dict(reasons.most_common(6))),
            bar_chart("Generations calling tools", ordered_tools, "generations")]


def dashboard(records: Sequence[GenerationRecord], episodes: Iterable[StoredEpisode], current: int) -> str:
    """Every plot, as one block of HTML (inline SVG) over the most recent `records`."""
    charts = [reward_by_version(records, episodes), *activity(records), staleness(records, current), *outcomes(records)]
    note = (f'<div class="meta">Over the {len(records)} most recent generations; hover a point for its value.'
            f"{' No finished generation has timings yet.' if not any(r.timings for r in records) else ''}</div>")
    return note + '<div class="loai-plots" style="display:flex;flex-wrap:wrap;gap:8px">' + "".join(charts) + "</div>"
