"""The package's layout stays readable: no two modules share a name (one `base.py`,
`config.py` or `report.py` per package made every traceback and import ambiguous), except
the `app/` modules named after their `mr-mllm <command>`; and module-level imports form
no circle (a circle works only by import order, and breaks on the next edit)."""

import ast
from collections import Counter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / 'mr_mllm_ros'


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob('*.py'):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        out['.'.join(parts)] = path
    return out


def test_no_two_modules_share_a_name():
    names = Counter(m.rsplit('.', 1)[-1] for m in _modules()
                    if not m.startswith('mr_mllm_ros.app.'))
    assert [n for n, k in names.items() if k > 1] == []


def _imports(module: str, path: Path, modules: dict) -> set[str]:
    """Package modules `module` imports at module level (not in functions, not under
    `if TYPE_CHECKING:`)."""
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                up = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(up + ([base] if base else []))
            names = [f'{base}.{a.name}' if f'{base}.{a.name}' in modules else base
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition('.')[0]
            if name and name != module:
                found.add(name)
    return found


def test_module_level_imports_form_no_circle():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    assert sum(map(len, graph.values())) > len(modules)  # the graph was read
    done, path = set(), []

    def visit(m):  # depth-first; a module met again on the current path closes a circle
        if m in path:
            raise AssertionError('import circle: ' + ' -> '.join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for n in sorted(graph[m]):
            visit(n)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)
