"""Progress of long jobs (replay, adapter training): a tqdm bar on a terminal, and where
stderr is not one (a log file, CI, `nohup`) one log line per `every` units instead: a bar
redrawn with carriage returns fills a 25-minute log with one "line" per step."""

from __future__ import annotations

import logging
import sys
import time


class NoProgress:
    """Progress that shows nothing (progress disabled)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass


class ProgressLines(NoProgress):
    """One log line (done/total, rate, ETA, the latest postfix) each time the count
    passes a multiple of `every`."""

    def __init__(self, total: int, desc: str, unit: str, every: int, logger: logging.Logger,
                 initial: int = 0, approximate: bool = False):
        self.total, self.desc, self.unit = total, desc, unit
        self.every, self.log = max(1, every), logger
        self.n = self.start = initial
        self.approx = '~' if approximate else ''
        self.postfix = ''
        self.t0 = time.monotonic()

    def update(self, n: int = 1) -> None:
        before, self.n = self.n, self.n + n
        if self.n // self.every > before // self.every:
            self._line()

    def set_postfix(self, **values) -> None:
        self.postfix = ', '.join(f'{k} {v}' for k, v in values.items())

    def _line(self) -> None:
        rate = (self.n - self.start) / max(time.monotonic() - self.t0, 1e-9)
        left = max(self.total - self.n, 0) / rate if rate > 0 else float('inf')
        extra = f', {self.postfix}' if self.postfix else ''
        self.log.info('%s: %d/%s%d %ss, %.2f %ss/s, ETA %.0f s%s', self.desc, self.n,
                      self.approx, self.total, self.unit, rate, self.unit, left, extra)


def progress(total: int, desc: str, unit: str, logger: logging.Logger,
             enabled: bool | None = None, every: int = 1, initial: int = 0,
             approximate: bool = False):
    """A progress object with update(n), set_postfix(**values) and close(): a tqdm bar
    when `enabled`, or by default on a terminal; by default elsewhere, ProgressLines;
    `enabled` False: NoProgress."""
    if enabled is False:
        return NoProgress()
    if enabled is None and not sys.stderr.isatty():
        return ProgressLines(total, desc, unit, every, logger, initial, approximate)
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit=unit, file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1, desc=desc)
