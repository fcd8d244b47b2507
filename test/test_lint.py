"""The Python files lint clean: pycodestyle errors and warnings and pyflakes (ruff's E, F,
W rules) at 100 columns, as ament_flake8 checks a ROS package - unused imports, undefined
names and docstrings that outgrew their lines after a rename are caught here, not later."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES = ['--select', 'E,F,W', '--line-length', '100']
CHECKED = ['mr_mllm_ros', 'test', 'benchmarks', 'launch', 'setup.py']  # every .py file


def _ruff(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'ruff', 'check', '--no-cache',
                           '--output-format', 'concise', *RULES, *map(str, paths)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_the_package_tests_and_benchmarks_lint_clean():
    r = _ruff(*(ROOT / p for p in CHECKED))
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_lint_finds_what_it_should(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text('import os\n\n\ndef f():\n    return undefined_name  # ' + 'x' * 90 + '\n')
    r = _ruff(bad)
    assert r.returncode == 1
    assert {'F401', 'F821', 'E501'} <= {w for line in r.stdout.splitlines()
                                        for w in line.split() if w[:1] in 'EFW'
                                        and w[1:].isdigit()}
