"""Profiles in collapsed-stack form (py-spy's raw output: one `frame;frame;... count` line
per distinct stack) as a flame graph (a self-contained SVG, hover for figures) and as
tables of the functions that hold the most samples themselves (self) and with what they
call (total)."""
from __future__ import annotations

import collections
import html
import zlib
from pathlib import Path

WIDTH, ROW, FONT = 1200, 17, 11
# Functions that, sampled as the innermost frame, are a thread waiting for work: the event
# loop in epoll, a pool worker on its queue, the metrics server's poll. py-spy cannot
# always tell such threads are idle; counted, they would bury the work.
IDLE = ("EpollSelector.select", "_PollLikeSelector.select", "_worker", "Condition.wait",
        "Event.wait")


def read(raw: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in raw.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def without_idle(stacks: list[tuple[list[str], int]]
                 ) -> tuple[list[tuple[list[str], int]], float]:
    """The stacks whose innermost frame is not an IDLE wait, and the share left out."""
    busy = [(frames, count) for frames, count in stacks
            if frames[-1].split(" (", 1)[0] not in IDLE]
    total = sum(count for _, count in stacks)
    return busy, (1 - sum(count for _, count in busy) / total) if total else 0.0


def top_functions(stacks: list[tuple[list[str], int]], n: int = 12) -> dict:
    """{"self": [(function, share)], "total": [...]}: shares of all samples."""
    own, total, samples = collections.Counter(), collections.Counter(), 0
    for frames, count in stacks:
        own[frames[-1]] += count
        for frame in set(frames):  # a recursive function counts once per sample
            total[frame] += count
        samples += count
    if not samples:
        return {"self": [], "total": []}
    return {kind: [(frame, round(c / samples, 3)) for frame, c in counter.most_common(n)]
            for kind, counter in (("self", own), ("total", total))}


def _tree(stacks):
    root = {"count": 0, "children": {}}
    for frames, count in stacks:
        root["count"] += count
        node = root
        for frame in frames:
            node = node["children"].setdefault(frame, {"count": 0, "children": {}})
            node["count"] += count
    return root


def _colour(name: str) -> str:
    hue = zlib.crc32(name.encode()) % 60  # reds to yellows, stable per function
    return f"hsl({hue},80%,{60 + hue % 15}%)"


def render(stacks: list[tuple[list[str], int]], title: str) -> str:
    """The flame graph of `stacks` as SVG text: callers below, callees above, widths in
    proportion to samples."""
    root = _tree(stacks)
    total = root["count"] or 1
    rects, depth_max = [], 0

    def walk(node, x: float, depth: int):
        nonlocal depth_max
        for name, child in sorted(node["children"].items()):
            width = child["count"] / total * WIDTH
            if width >= 0.5:
                depth_max = max(depth_max, depth)
                rects.append((x, depth, width, name, child["count"]))
                walk(child, x, depth + 1)
            x += width

    walk(root, 0.0, 0)
    height = (depth_max + 3) * ROW
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'font-family="monospace" font-size="{FONT}">',
             f'<text x="4" y="{ROW - 4}" font-size="{FONT + 2}">{html.escape(title)} '
             f'({total:,} samples)</text>']
    for x, depth, width, name, count in rects:
        y = height - (depth + 1) * ROW
        label = name if len(name) * 6.6 < width - 4 else name[:max(0, int(width / 6.6) - 3)]
        parts.append(
            f'<g><title>{html.escape(name)}: {count:,} samples, {count / total:.1%}</title>'
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{ROW - 1}" '
            f'fill="{_colour(name)}"/>'
            + (f'<text x="{x + 2:.1f}" y="{y + ROW - 5}">{html.escape(label)}'
               f'{"..." if label != name else ""}</text>' if len(label) > 2 else "")
            + "</g>")
    parts.append("</svg>\n")
    return "".join(parts)
