"""JSON records that stay valid JSON: a NaN or infinite number becomes null, and the record's
"nonfinite" map says which value it was ({"history.3.loss": "nan"}), so nothing is hidden and any
JSON reader can load the file. `restore_nonfinite` undoes it (resume states round-trip exactly)."""

from __future__ import annotations

import math
from typing import Dict

NONFINITE_KEY = "nonfinite"


def _clean(value, path: str, found: Dict[str, str]):
    if isinstance(value, float) and not math.isfinite(value):
        found[path] = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return None
    if isinstance(value, dict):
        return {
            key: _clean(item, f"{path}.{key}" if path else str(key), found) for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [
            _clean(item, f"{path}.{index}" if path else str(index), found) for index, item in enumerate(value)
        ]
    return value


def json_safe(record: Dict[str, object]) -> Dict[str, object]:
    """A copy of `record` with non-finite floats as null, listed under "nonfinite" (absent when none)."""
    found: Dict[str, str] = {}
    cleaned = _clean({k: v for k, v in record.items() if k != NONFINITE_KEY}, "", found)
    if found:
        cleaned[NONFINITE_KEY] = found
    return cleaned


def restore_nonfinite(record: Dict[str, object]) -> Dict[str, object]:
    """The record `json_safe` was given (the nulls it made become their floats again)."""
    found = record.get(NONFINITE_KEY) or {}
    restored = {k: v for k, v in record.items() if k != NONFINITE_KEY}
    for path, text in found.items():
        *parents, last = path.split(".")
        container = restored
        for part in parents:
            container = container[int(part)] if isinstance(container, list) else container[part]
        if isinstance(container, list):
            container[int(last)] = float(text)
        else:
            container[last] = float(text)
    return restored
