"""Backends named in config and imported only when chosen: a detector or MLLM backend
pulls in OpenCV DNN, ultralytics, transformers or llama.cpp, each seconds to import and
some absent on a given robot."""

from __future__ import annotations

import importlib


def load_class(package: str, table: dict[str, str], name: str):
    """The class that `table` names for `name` ('module:Class', the module relative to
    `package`), imported now. Config validation admits only names in the table."""
    module, cls = table[name].split(':')
    return getattr(importlib.import_module(f'.{module}', package), cls)
