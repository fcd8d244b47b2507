"""What the tests share (a package, imported as `helpers.<module>`): graph-test helpers,
test bags, a scripted MLLM backend, stub and throwaway servers (OpenAI-compatible HTTP,
PostgreSQL), headless Chromium, and the repository's labelled sample data."""

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LABELS = REPO / 'data' / 'sample_photos' / 'instances.json'


def hand_labels() -> dict[str, list[tuple[str, tuple[float, float, float, float]]]]:
    """sample name -> [(COCO category, (x1, y1, x2, y2))] from the committed labels."""
    coco = json.loads(LABELS.read_text())
    cats = {c['id']: c['name'] for c in coco['categories']}
    names = {im['id']: im['file_name'] for im in coco['images']}
    out: dict[str, list] = {n: [] for n in names.values()}
    for a in coco['annotations']:
        x, y, w, h = a['bbox']
        out[names[a['image_id']]].append((cats[a['category_id']], (x, y, x + w, y + h)))
    return out
