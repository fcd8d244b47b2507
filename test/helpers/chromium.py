"""Headless Chromium screenshots of the HTML reports (installed by scripts/setup.sh where
apt-get works; the tests that need it skip with that reason otherwise)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

CHROMIUM = Path('/usr/bin/chromium')


def screenshot(html: Path, tmp_path: Path, size=(1200, 2000)) -> np.ndarray:
    """BGR screenshot of `html` opened from disk with no network; skips the test when
    Chromium is missing, fails it when no screenshot was written."""
    if not CHROMIUM.exists():
        pytest.skip('chromium is not installed at /usr/bin/chromium (scripts/setup.sh '
                    'installs it where apt-get works)')
    png = tmp_path / 'report.png'
    cmd = [str(CHROMIUM), '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
           '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync',
           f'--user-data-dir={tmp_path / "profile"}', f'--screenshot={png}',
           f'--window-size={size[0]},{size[1]}', html.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    shot = cv2.imread(str(png))
    assert shot is not None and shot.shape[:2] == (size[1], size[0]), 'no screenshot written'
    return shot
