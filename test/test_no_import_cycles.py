"""No import circle between mr_mllm_ros modules (module-level imports; an import inside
a function is deferred and cannot make one)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / 'mr_mllm_ros'


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path: Path, name: str) -> set[str]:
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:  # top level only
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                mod = '.'.join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ''
            found.add(mod)
            found |= {f'{mod}.{a.name}' for a in node.names}
    return {m for m in found if m.startswith('mr_mllm_ros')}


def test_no_module_level_import_cycle():
    modules = {_module_name(p): p for p in PKG.rglob('*.py')}
    graph = {name: {m for m in _imports(p, name) if m in modules and m != name}
             for name, p in modules.items()}
    # a package's __init__ importing its own submodules is not a circle with them
    for name in graph:
        graph[name] = {m for m in graph[name] if not m.startswith(name + '.')}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = 'open'
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 'done'

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert len(modules) > 50
    assert not cycles, cycles
