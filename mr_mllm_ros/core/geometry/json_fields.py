"""A detection's position in JSON records (replay results.jsonl, memory evidence): the
keys appear only when there is a position, so records without depth stay as they were."""

from __future__ import annotations


def position_json(position, spread: float = 0.0) -> dict:
    if position is None:
        return {}
    return {'position': [round(float(c), 4) for c in position],
            'position_spread': round(float(spread), 4)}


def position_from_json(j: dict) -> tuple:
    """(position or None, spread) from a record written by position_json."""
    p = j.get('position')
    return (None, 0.0) if p is None else (tuple(float(c) for c in p),
                                          float(j.get('position_spread', 0.0)))
