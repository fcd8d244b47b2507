"""Free text -> a memory Query: the kind of question, the classes it names, the camera,
a time window and an image region. Rules first (class names, synonyms, time and region
phrases); words that name no known class go to sentence embeddings (vocabulary.py);
what names no object at all is searched among the descriptions."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .question_words import Vocabulary

KINDS = ('last_seen', 'first_seen', 'never_observed', 'duration', 'count_tracks', 'region',
         'near', 'description')
#: Named image regions as (x1, y1, x2, y2) fractions of the image.
REGIONS = {
    'top left': (0, 0, .5, .5), 'upper left': (0, 0, .5, .5),
    'top right': (.5, 0, 1, .5), 'upper right': (.5, 0, 1, .5),
    'bottom left': (0, .5, .5, 1), 'lower left': (0, .5, .5, 1),
    'bottom right': (.5, .5, 1, 1), 'lower right': (.5, .5, 1, 1),
    'left': (0, 0, .5, 1), 'right': (.5, 0, 1, 1), 'top': (0, 0, 1, .5),
    'upper': (0, 0, 1, .5), 'bottom': (0, .5, 1, 1), 'lower': (0, .5, 1, 1),
    'centre': (.25, .25, .75, .75), 'center': (.25, .25, .75, .75),
    'middle': (.25, .25, .75, .75),
}
_UNITS = {'s': 1, 'sec': 1, 'secs': 1, 'second': 1, 'seconds': 1, 'min': 60, 'mins': 60,
          'minute': 60, 'minutes': 60, 'h': 3600, 'hour': 3600, 'hours': 3600,
          'day': 86400, 'days': 86400}
_CLOCK = r'\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?'
_TIME = rf'(\d{{4}}-\d{{2}}-\d{{2}}[t ]{_CLOCK}|{_CLOCK})'


@dataclass(frozen=True)
class Query:
    kind: str
    classes: tuple[str, ...] = ()
    camera: str = ''
    t0_ns: int | None = None
    t1_ns: int | None = None
    region: tuple[float, float, float, float] | None = None
    region_name: str = ''
    text: str = ''
    #: How each unknown word was mapped to a class by embedding: word -> (class, cosine).
    mapped: tuple = ()
    #: 'near': "within radius_m of" an object class (anchor_class) or a point (x, y[, z])
    #: in metres; `classes` then limits what is reported.
    radius_m: float | None = None
    anchor_class: str = ''
    anchor_point: tuple[float, ...] | None = None


def _parse_time(text: str, reference_ns: int) -> int:
    """An ISO date-time or a time of day (UTC, on the reference's date) -> ns."""
    ref = dt.datetime.fromtimestamp(reference_ns / 1e9, dt.timezone.utc)
    if '-' in text:
        t = dt.datetime.fromisoformat(text.replace(' ', 'T').upper())
        t = t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)
    else:
        parts = text.split(':')
        sec = float(parts[2]) if len(parts) > 2 else 0.0
        t = ref.replace(hour=int(parts[0]), minute=int(parts[1]), second=int(sec),
                        microsecond=int(round((sec % 1) * 1e6)))
    return int(round(t.timestamp() * 1e6)) * 1000


def time_window(text: str, reference_ns: int) -> tuple[int | None, int | None]:
    low = text.lower()
    m = re.search(r'(?:in|during|over|within) the (?:last|past) (\d+(?:\.\d+)?)? ?([a-z]+)',
                  low)
    if m and m.group(2) in _UNITS:
        n = float(m.group(1) or 1)
        return reference_ns - int(n * _UNITS[m.group(2)] * 1e9), reference_ns
    t0 = t1 = None
    m = re.search(rf'between {_TIME} and {_TIME}', low)
    if m:
        return _parse_time(m.group(1), reference_ns), _parse_time(m.group(2), reference_ns)
    m = re.search(rf'(?:since|after|from) {_TIME}', low)
    if m:
        t0 = _parse_time(m.group(1), reference_ns)
    m = re.search(rf'(?:before|until|till|to) {_TIME}', low)
    if m:
        t1 = _parse_time(m.group(1), reference_ns)
    return t0, t1


def image_region(text: str) -> tuple[tuple[float, float, float, float] | None, str]:
    """A region named in words, or [x1, y1, x2, y2] as fractions (<= 1) or on the
    prompts' 0-1000 grid."""
    m = re.search(r'\[\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*\]', text)
    if m:
        v = [float(x) for x in m.groups()]
        scale = 1.0 if max(v) <= 1.0 else 1000.0
        box = tuple(min(1.0, x / scale) for x in v)
        return box, '[' + ', '.join(f'{x:g}' for x in box) + ']'
    low = text.lower()
    for name, box in REGIONS.items():  # two-word names come first
        if re.search(rf'\b(?:in|at|on) the {name}\b', low) or \
                re.search(rf'\b{name} (?:half|side|part|corner|third)\b', low):
            return tuple(float(x) for x in box), name
    return None, ''


_NEAR = re.compile(r'\bwithin (\d+(?:\.\d+)?) ?(?:m|meters?|metres?)\b(?: (?:of|from|around))?'
                   r'(?: (?:the|a|an))? ?(.*)')
_POINT = re.compile(r'\(?\s*\[?\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)'
                    r'(?:\s*,\s*(-?\d+(?:\.\d+)?))?')


def near_query(low: str, vocabulary: Vocabulary) -> tuple | None:
    """'what was within 2 m of the cup?' -> (2.0, 'cup', None, other classes);
    'within 1.5 m of (3, 1)' -> (1.5, '', (3.0, 1.0), classes); None otherwise."""
    m = _NEAR.search(low)
    if m is None:
        return None
    rest, before = m.group(2), low[:m.start()]
    point = _POINT.match(rest)
    anchor = None
    if point is None:
        found, _ = vocabulary.find_classes(rest)
        anchor = found[0] if found else None
        if anchor is None:
            return None
    others, _ = vocabulary.find_classes(before)
    coords = tuple(float(g) for g in point.groups() if g is not None) if point else None
    return float(m.group(1)), anchor or '', coords, tuple(c for c in others if c != anchor)


def parse_question(question: str, vocabulary: Vocabulary, reference_ns: int,
                   camera: str = '') -> Query:
    low = ' '.join(question.lower().split())
    near = near_query(low, vocabulary)
    if near is not None:
        t0, t1 = time_window(low, reference_ns)
        return Query('near', near[3], camera, t0, t1, text=question, radius_m=near[0],
                     anchor_class=near[1], anchor_point=near[2])
    classes, unknown = vocabulary.find_classes(low)
    mapped = []
    if not classes:
        for word in (w for w in unknown if len(w) >= 3):
            hit = vocabulary.nearest_class(word)
            if hit is not None:
                classes.append(hit[0])
                mapped.append((word, hit[0], round(hit[1], 3)))
                break
    t0, t1 = time_window(low, reference_ns)
    region, region_name = image_region(low)
    if region is not None and re.search(r'\b(what|which|who|anything|anyone|objects?)\b',
                                        low):
        kind = 'region'
    elif 'how many' in low:
        kind = 'count_tracks'
    elif 'how long' in low:
        kind = 'duration'
    elif re.search(r'\bfirst\b', low) or re.search(r'\b(appear|arrive|show up)', low):
        kind = 'first_seen'
    elif classes and (re.search(r'\b(where|when|last|seen|see|saw|spot\w*|notic\w*|ever|'
                                r'still)\b', low) or not re.match(r'(what|who|why|describe)\b',
                                                                  low)):
        kind = 'last_seen'
    else:
        kind = 'description'
    if kind in ('count_tracks', 'duration', 'first_seen', 'last_seen') and not classes:
        kind = 'description'
    return Query(kind, tuple(classes), camera, t0, t1, region, region_name, question,
                 tuple(mapped))
