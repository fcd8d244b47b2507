"""README's parameter table stays true: every key it names is in config/mr_mllm.yaml (the
one set of defaults), and every default it quotes in backticks is the YAML's value.

A row names keys as `section.key` / `other` / ... (later names in the first one's
section) and defaults as `v1` / `v2` / ... in the same order; a default in prose (e.g.
"30 days") or a `section.*` row is not compared."""

import re
from pathlib import Path

import yaml

from mr_mllm_ros.core.config import default_config_path, read_parameters_file

REPO = Path(__file__).resolve().parents[1]


def _table_rows() -> list[tuple[str, str]]:
    readme = (REPO / 'README.md').read_text()
    section = readme.split('### Parameters', 1)[1].split('\n#', 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) >= 3 and cells[0].startswith('`'):
            rows.append((cells[0], cells[1]))
    return rows


def _lookup(tree: dict, dotted: str):
    node = tree
    for part in dotted.split('.'):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def test_the_parameter_table_names_yaml_keys_with_their_yaml_defaults():
    tree = read_parameters_file(default_config_path())
    rows = _table_rows()
    assert len(rows) > 20
    unknown, wrong, compared = [], [], 0
    for keys_cell, defaults_cell in rows:
        names = re.findall(r'`([^`]+)`', keys_cell)
        if names[0].endswith('.*'):
            continue
        prefix = names[0].rsplit('.', 1)[0] + '.' if '.' in names[0] else ''
        keys = [names[0]] + [n if '.' in n else prefix + n for n in names[1:]]
        parts = [p.strip() for p in defaults_cell.split(' / ')]
        for i, key in enumerate(keys):
            try:
                value = _lookup(tree, key)
            except KeyError:
                unknown.append(key)
                continue
            quoted = re.fullmatch(r'`([^`]*)`', parts[i]) if i < len(parts) else None
            if quoted is None:
                continue
            compared += 1
            if yaml.safe_load(quoted.group(1)) != value:
                wrong.append(f'{key}: README `{quoted.group(1)}`, YAML {value!r}')
    assert not unknown, f'README names keys config/mr_mllm.yaml lacks: {unknown}'
    assert not wrong, 'README defaults differ from config/mr_mllm.yaml:\n' + '\n'.join(wrong)
    assert compared > 40
