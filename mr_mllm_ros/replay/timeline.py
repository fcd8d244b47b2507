"""The report's "timeline of objects": from the replay's memory.db, one bar per track
(when it was first and last seen) per camera, and a table per class. Inline SVG, no
script, like the rest of report.html."""

from __future__ import annotations

import html
from pathlib import Path

from ..core.memory import SceneMemory, fmt_span, fmt_time
from .memory_db import MEMORY_DB

MAX_TRACKS = 60
COLOURS = ('#2f6fde', '#e08a00', '#2a9d4b', '#d62828', '#7b4fd0', '#1a9aa0', '#b5651d',
           '#c2185b')


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def timeline_section(out: Path) -> str:
    path = out / MEMORY_DB
    head = '<h2 id="objects">Timeline of objects</h2>'
    if not path.is_file():
        return head + '<p>No memory.db in this folder.</p>'
    memory = SceneMemory(str(path), create=False, embeddings=False)
    try:
        tracks = memory.tracks(MAX_TRACKS)
        summary = memory.summary()
    finally:
        memory.close()
    if not summary['classes']:
        return head + '<p>No objects were detected.</p>'
    h = [head, f'<p><code>{_esc(MEMORY_DB)}</code> holds {summary["observations"]} '
         f'observations; ask it with <code>mr-mllm memory ask --db {_esc(path)} '
         '"when did you last see a person?"</code>.</p>']
    if tracks:
        h.append(_bars(sorted(tracks, key=lambda t: (t[0], t[1], t[3])), summary))
    h.append('<table><tr><th>class</th><th>tracks</th><th>observations</th>'
             '<th>first seen</th><th>last seen</th></tr>')
    for c in summary['classes']:
        h.append(f'<tr><td>{_esc(c["class"])}</td><td class="n">{c["tracks"]}</td>'
                 f'<td class="n">{c["observations"]}</td><td>{_esc(fmt_time(c["first_ns"]))}'
                 f'</td><td>{_esc(fmt_time(c["last_ns"]))}</td></tr>')
    h.append('</table>')
    return ''.join(h)


def _bars(tracks, summary) -> str:
    t0 = min(c['from_ns'] for c in summary['cameras'])
    t1 = max(c['to_ns'] for c in summary['cameras'])
    span = max(t1 - t0, 1)
    classes = sorted({t[1] for t in tracks})
    colour = {c: COLOURS[i % len(COLOURS)] for i, c in enumerate(classes)}
    left, width, row_h = 260, 900, 16
    height = row_h * len(tracks) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {left + width + 20} '
           f'{height}" width="100%" style="max-width:{left + width + 20}px" role="img" '
           'aria-label="timeline of objects">']
    for i, (camera, cls, track, first, last, n) in enumerate(tracks):
        y = 8 + i * row_h
        x = left + width * (first - t0) / span
        w = max(2.0, width * (last - first) / span)
        out.append(f'<text x="4" y="{y + 11}">{_esc(camera)} {_esc(cls)} #{track}</text>'
                   f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{row_h - 5}" '
                   f'fill="{colour[cls]}" fill-opacity="0.8"><title>{_esc(cls)} track '
                   f'{track} on {_esc(camera)}: {_esc(fmt_time(first))} to '
                   f'{_esc(fmt_time(last))} ({_esc(fmt_span((last - first) / 1e9))}, {n} '
                   'observations)</title></rect>')
    y = height - 6
    out.append(f'<text x="{left}" y="{y}">{_esc(fmt_time(t0))}</text>'
               f'<text x="{left + width}" y="{y}" text-anchor="end">+{span / 1e9:.1f} s</text>'
               '</svg>')
    return ''.join(out)
