"""README's "Where things live" table stays true: every path it names exists."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_path_in_the_where_things_live_table_exists():
    readme = (REPO / 'README.md').read_text()
    section = readme.split('## Where things live', 1)[1].split('\n## ', 1)[0]
    rows = [line for line in section.splitlines() if line.startswith('| ') and '`' in line]
    paths = [p for row in rows for p in re.findall(r'`([^`]+)`', row.split('|')[2])]
    assert len(paths) > 40
    # `perception_node.py, scene_node.py` after a folder-qualified path share its folder
    folder = ''
    missing = []
    for p in paths:
        if '/' in p:
            folder = p.rsplit('/', 1)[0] if not p.endswith('/') else p.rstrip('/')
            target = REPO / p
        else:
            target = REPO / folder / p
        if not target.exists():
            missing.append(str(target.relative_to(REPO)))
    assert not missing, missing
