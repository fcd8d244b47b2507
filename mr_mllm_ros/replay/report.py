"""report.html: one self-contained page about a replay, built from results.jsonl.

Inline CSS, thumbnails embedded as base64 JPEG (core.images.annotated_jpeg when the frame
was processed), an inline SVG alert timeline; no script and nothing loaded from the
network, so it opens from disk in any browser and can be mailed as one file.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from dataclasses import dataclass, field
from pathlib import Path

from ..core.geometry import distance_words
from .outputs import EVIDENCE_DIR, RESULTS, THUMBS_DIR, iter_results, thumb_name
from .timeline import timeline_section

SEVERITY_COLOURS = {'INFO': '#2f6fde', 'WARN': '#e08a00', 'CRITICAL': '#d62828'}
MAX_ALERT_FRAMES = 1000
DESCRIBED_SAMPLE = 24

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;
 background:#f4f5f7;color:#1d232b}
header{background:#1d2733;color:#fff;padding:14px 24px}
header h1{margin:0 0 4px;font-size:20px}
header .sub{color:#b9c3cf;font-size:13px}
main{padding:8px 24px 40px;max-width:1240px}
h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #d5d9df;padding-bottom:4px}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #dde1e6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eceff3}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.problem{color:#a61b1b}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #d5d9df;border-radius:6px;padding:8px;width:340px}
.card img{display:block;max-width:320px;max-height:320px;margin:0 auto 6px}
.card .meta{color:#5b6673;font-size:12px}
.noimg{width:320px;height:60px;background:#eceff3;color:#5b6673;display:flex;
 align-items:center;justify-content:center;font-size:12px;margin-bottom:6px}
.sev{display:inline-block;color:#fff;border-radius:3px;padding:0 5px;font-size:11px;
 font-weight:600;margin-right:4px}
mark{background:#ffe9a8;padding:0 1px}
a.obj{font-size:11px;color:#2f6fde;text-decoration:none;vertical-align:super}
ul.objs{margin:4px 0 0;padding-left:18px;font-size:12px;color:#3b4550}
.models td:first-child{font-weight:600}
svg text{font:11px system-ui,sans-serif;fill:#3b4550}
.why{font-size:12px;color:#3b4550;margin:2px 0}
img.evidence{display:block;max-width:320px;border:2px solid #d62828;margin:4px 0}
a.clip{font-size:12px;color:#2f6fde}
"""


@dataclass
class _TopicStats:
    bag: str
    topic: str
    frames: int = 0
    ok: int = 0
    skipped: int = 0
    detections: int = 0
    descriptions: int = 0
    alerts: dict = field(default_factory=dict)
    first_ns: int | None = None
    last_ns: int | None = None


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _time(ns: int) -> str:
    t = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc)
    return t.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3] + ' UTC'


def _img(out: Path, record: dict, alt: str) -> str:
    path = out / THUMBS_DIR / thumb_name(record)
    if not path.is_file():
        return '<div class="noimg">no image stored</div>'
    data = base64.b64encode(path.read_bytes()).decode('ascii')
    return f'<img alt="{_esc(alt)}" src="data:image/jpeg;base64,{data}">'


def highlight(text: str, phrases: list[dict], anchor: str) -> str:
    """The text with each grounded phrase marked and followed by links to its objects."""
    parts, pos = [], 0
    for p in sorted(phrases, key=lambda p: p['start']):
        start, end = max(p['start'], pos), min(p['end'], len(text))
        if start >= end:
            continue
        parts.append(_esc(text[pos:start]))
        links = ''.join(f'<a class="obj" href="#{anchor}-obj{i}">obj{i}</a>'
                        for i in p['objects'])
        parts.append(f'<mark>{_esc(text[start:end])}</mark>{links}')
        pos = end
    parts.append(_esc(text[pos:]))
    return ''.join(parts)


def _where(d: dict) -> str:
    """', 2.3 m ahead, slightly left (±0.05 m)' for an object with a position (depth)."""
    if d.get('position') is None:
        return ''
    spread = d.get('position_spread', 0.0)
    return _esc(f', {distance_words(d["position"])} (\u00b1{spread:.2f} m)')


def _objects(objs: list[dict], anchor: str) -> str:
    if not objs:
        return ''
    items = ''.join(f'<li id="{anchor}-obj{i}">obj{i} {_esc(d["class_name"])} '
                    f'{d["score"]:.2f}{" (mllm)" if d["source"] == "mllm" else ""}'
                    f'{" verified" if d["verified"] else ""}{_where(d)}</li>'
                    for i, d in enumerate(objs))
    return f'<ul class="objs">{items}</ul>'


def _timeline(stats: list[_TopicStats], alert_frames: list[dict]) -> str:
    if not alert_frames:
        return '<p>No alerts.</p>'
    rows = [(s.bag, s.topic) for s in stats]
    t0 = min(s.first_ns for s in stats if s.first_ns is not None)
    t1 = max(s.last_ns for s in stats if s.last_ns is not None)
    span = max(t1 - t0, 1)
    left, width, row_h = 260, 900, 26
    height = row_h * len(rows) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {left + width + 20} '
           f'{height}" width="100%" style="max-width:{left + width + 20}px" role="img" '
           'aria-label="alert timeline">']
    for i, (bag, topic) in enumerate(rows):
        y = 10 + i * row_h
        out.append(f'<text x="4" y="{y + 15}">{_esc(Path(bag).name)} {_esc(topic)}</text>')
        out.append(f'<line x1="{left}" y1="{y + 11}" x2="{left + width}" y2="{y + 11}" '
                   'stroke="#c7ccd3"/>')
    for n, f in enumerate(alert_frames):
        row = rows.index((f['bag'], f['topic']))
        x = left + width * (f['log_time_ns'] - t0) / span
        y = 10 + row * row_h + 11
        for a in f['alerts']:
            colour = SEVERITY_COLOURS.get(a['severity'], '#555')
            out.append(f'<a href="#alert-{n}"><circle cx="{x:.1f}" cy="{y}" r="6" '
                       f'fill="{colour}" fill-opacity="0.8"><title>{_esc(a["severity"])} '
                       f'{_esc(a["rule"])}: {_esc(a["message"])}</title></circle></a>')
    y = height - 6
    out.append(f'<text x="{left}" y="{y}">{_esc(_time(t0))}</text>')
    out.append(f'<text x="{left + width}" y="{y}" text-anchor="end">+{span / 1e9:.1f} s'
               '</text></svg>')
    return ''.join(out)


def alert_proof(out: Path, alert: dict) -> str:
    """An alert's evidence: its rationale and its evidence image (the triggering frame,
    boxes drawn, the alert's objects in red)."""
    parts = []
    if alert.get('rationale'):
        parts.append(f'<div class="why">{_esc(alert["rationale"])}</div>')
    path = out / EVIDENCE_DIR / alert['evidence'] if alert.get('evidence') else None
    if path is not None and path.is_file():
        data = base64.b64encode(path.read_bytes()).decode('ascii')
        parts.append(f'<img class="evidence" alt="evidence of {_esc(alert["rule"])}" '
                     f'src="data:image/jpeg;base64,{data}">')
    return ''.join(parts)


def clip_link(out: Path, frame: dict) -> str:
    """A link to the MCAP clip cut around the frame's alerts (opens in Foxglove)."""
    from .foxglove_outputs import CLIPS_DIR, clip_name
    name = clip_name(frame)
    if not (out / CLIPS_DIR / name).is_file():
        return ''
    return (f'<br><a class="clip" href="{CLIPS_DIR}/{_esc(name)}">clip (MCAP, open in '
            'Foxglove)</a>')


def write_report(out: Path, summary: dict, path: Path | None = None) -> Path:
    """Build report.html in `out` from results.jsonl, thumbs/ and the run summary."""
    stats: dict[tuple[str, str], _TopicStats] = {}
    alert_frames: list[dict] = []
    described: list[dict] = []
    plain: list[dict] = []
    models: dict[str, set] = {}
    reasons: dict[str, list] = {}
    for r in iter_results(out / RESULTS):
        key = (r['bag'], r['topic'])
        s = stats.setdefault(key, _TopicStats(*key))
        s.frames += 1
        t = r['log_time_ns']
        s.first_ns = t if s.first_ns is None else min(s.first_ns, t)
        s.last_ns = t if s.last_ns is None else max(s.last_ns, t)
        if r.get('status') != 'ok':
            s.skipped += 1
            entry = reasons.setdefault(r.get('reason', 'unknown'), [0, r.get('error', '')])
            entry[0] += 1
            continue
        s.ok += 1
        for role, name in (r.get('models') or {}).items():
            models.setdefault(role, set()).add(name)
        s.detections += len(r['detections']['items'])
        slim = {k: r[k] for k in ('bag', 'topic', 'log_time_ns', 'stamp_ns', 'frame_id')}
        if r.get('description') is not None:
            s.descriptions += 1
            d = r['description']
            models.setdefault('mllm (descriptions)', set()).add(d['mllm_model'])
            described.append({**slim, 'description': {k: d[k] for k in (
                'text', 'phrases', 'objects', 'grounded', 'mllm_model')}})
        elif (out / THUMBS_DIR / thumb_name(r)).is_file():
            plain.append({**slim, 'detections': r['detections']['items']})
        for a in r.get('alerts', ()):
            s.alerts[a['severity']] = s.alerts.get(a['severity'], 0) + 1
        if r.get('alerts'):
            alert_frames.append({**slim, 'alerts': r['alerts']})
    ordered = sorted(stats.values(), key=lambda s: (s.bag, s.topic))
    title = 'mr_mllm_ros replay report'
    total = sum(s.frames for s in ordered)
    n_alerts = sum(len(f['alerts']) for f in alert_frames)
    generated = dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    h = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
         f'<title>{title}</title><style>{CSS}</style></head><body>',
         f'<header><h1>{title}</h1><div class="sub">{total} frames from '
         f'{len({s.bag for s in ordered})} bag(s), {n_alerts} alerts on '
         f'{len(alert_frames)} frames, {sum(s.descriptions for s in ordered)} descriptions'
         f'{_calls(summary.get("mllm_calls"))}{_looker(summary.get("looker"))} '
         f'&middot; generated {generated}'
         '</div></header><main>']
    # Alerts first: they are what a reader came for (and what the screenshot test sees).
    h.append(f'<h2 id="alerts">Alerts ({n_alerts} on {len(alert_frames)} frames)</h2>')
    h.append(_timeline(ordered, alert_frames))
    shown = alert_frames[:MAX_ALERT_FRAMES]
    if shown:
        h.append('<div class="grid">')
        for n, f in enumerate(shown):
            lines = ''.join(
                f'<div><span class="sev" style="background:'
                f'{SEVERITY_COLOURS.get(a["severity"], "#555")}">{_esc(a["severity"])}</span>'
                f'<b>{_esc(a["rule"])}</b>: {highlight(a["message"], a["phrases"], f"a{n}")}'
                f'{_objects(a["objects"], f"a{n}")}{alert_proof(out, a)}</div>'
                for a in f['alerts'])
            h.append(f'<div class="card" id="alert-{n}">{_img(out, f, "alert frame")}'
                     f'<div class="meta">{_esc(Path(f["bag"]).name)} {_esc(f["topic"])}<br>'
                     f'{_esc(_time(f["log_time_ns"]))} &middot; frame {_esc(f["frame_id"])}'
                     f'{clip_link(out, f)}</div>{lines}</div>')
        h.append('</div>')
        if len(alert_frames) > len(shown):
            h.append(f'<p>{len(alert_frames) - len(shown)} more alert frames are in '
                     'alerts.csv and results.jsonl.</p>')
    sample = _even_sample(described, DESCRIBED_SAMPLE)
    if sample:
        h.append(f'<h2 id="described">Described frames ({len(sample)} of '
                 f'{len(described)})</h2><div class="grid">')
        for n, f in enumerate(sample):
            d = f['description']
            anchor = f'd{n}'
            h.append(f'<div class="card" id="{anchor}">{_img(out, f, "described frame")}'
                     f'<div class="meta">{_esc(Path(f["bag"]).name)} {_esc(f["topic"])}<br>'
                     f'{_esc(_time(f["log_time_ns"]))} &middot; {_esc(d["mllm_model"])}'
                     f'{"" if d["grounded"] else " &middot; ungrounded"}</div>'
                     f'<p>{highlight(d["text"], d["phrases"], anchor)}</p>'
                     f'{_objects(d["objects"], anchor)}</div>')
        h.append('</div>')
    elif plain:
        sample = _even_sample(plain, DESCRIBED_SAMPLE)
        h.append(f'<h2 id="frames">Sample of frames ({len(sample)}; no descriptions in this '
                 'run)</h2><div class="grid">')
        for n, f in enumerate(sample):
            h.append(f'<div class="card">{_img(out, f, "frame")}<div class="meta">'
                     f'{_esc(Path(f["bag"]).name)} {_esc(f["topic"])}<br>'
                     f'{_esc(_time(f["log_time_ns"]))}</div>'
                     f'{_objects(f["detections"], f"p{n}")}</div>')
        h.append('</div>')
    h.append(timeline_section(out))
    h.append('<h2 id="topics">Topics</h2><table><tr><th>bag</th><th>topic</th>'
             '<th>frames</th><th>decoded</th><th>skipped</th><th>detections</th>'
             '<th>descriptions</th><th>alerts</th><th>time span</th></tr>')
    for s in ordered:
        al = ', '.join(f'{v} {k}' for k, v in sorted(s.alerts.items())) or '0'
        span = (s.last_ns - s.first_ns) / 1e9 if s.first_ns is not None else 0
        h.append(f'<tr><td>{_esc(Path(s.bag).name)}</td><td>{_esc(s.topic)}</td>'
                 f'<td class="n">{s.frames}</td><td class="n">{s.ok}</td>'
                 f'<td class="n">{s.skipped}</td><td class="n">{s.detections}</td>'
                 f'<td class="n">{s.descriptions}</td><td>{_esc(al)}</td>'
                 f'<td class="n">{span:.1f} s</td></tr>')
    h.append('</table>')
    h.append('<h2 id="models">Models</h2><table class="models">')
    described_by = models.pop('mllm (descriptions)', set()) - models.get('mllm', set())
    if described_by:  # e.g. "none (... not called: no detections)"
        models['mllm (descriptions)'] = described_by
    for role, names in sorted(models.items()):
        h.append(f'<tr><td>{_esc(role)}</td><td>{_esc(", ".join(sorted(names)))}</td></tr>')
    h.append('</table>')
    if reasons:
        h.append('<h2 id="skipped">Skipped messages</h2><table><tr><th>reason</th>'
                 '<th>count</th><th>example</th></tr>')
        for reason, (count, example) in sorted(reasons.items()):
            h.append(f'<tr><td>{_esc(reason)}</td><td class="n">{count}</td>'
                     f'<td>{_esc(example)}</td></tr>')
        h.append('</table>')
    h.append('<h2 id="bags">Bags</h2><table><tr><th>bag</th><th>storage</th><th>read by</th>'
             '<th>problems</th><th>result bag</th></tr>')
    for b in summary.get('bags', []):
        problems = '<br>'.join(f'<span class="problem">{_esc(p)}</span>'
                               for p in b.get('problems', [])) or 'none'
        h.append(f'<tr><td>{_esc(b["path"])}</td><td>{_esc(b.get("storage", ""))}</td>'
                 f'<td>{_esc(b.get("reader", ""))}</td><td>{problems}</td>'
                 f'<td>{_esc(b.get("result_bag", ""))}</td></tr>')
    h.append('</table></main></body></html>\n')
    target = path or out / 'report.html'
    tmp = target.with_name(f'.{target.name}.tmp')
    tmp.write_text(''.join(h), encoding='utf-8')
    tmp.replace(target)
    return target


def _calls(calls: dict | None) -> str:
    """' (N MLLM reasoning steps: n change, n rate, ...)' of the summary, '' without."""
    if not calls or not sum(calls.values()):
        return ''
    parts = ', '.join(f'{n} {_esc(k.replace("_", " "))}' for k, n in calls.items() if n)
    return f' ({sum(calls.values())} MLLM reasoning steps: {parts})'


def _looker(counts: dict | None) -> str:
    """' (looker: n verified, n relabelled, ...)' of the summary, '' without."""
    if not counts or not sum(counts.values()):
        return ''
    return ' (looker: ' + ', '.join(f'{n} {_esc(k)}' for k, n in counts.items() if n) + ')'


def _even_sample(items: list, n: int) -> list:
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]
