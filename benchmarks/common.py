"""Shared helpers of the benchmark scripts: where the real data is, and writing results."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict[str, Any]:
    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine(), **result}, indent=2))
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def prepared(name: str, fmt: str, source: Path, cache: Path, options: dict[str, str] | None = None) -> Path:
    """Prepare a dataset from ../shared/data once into ``cache`` (outside the repository)."""
    from raygr.data.prepare import prepare
    out = cache / name
    if not (out / "manifest.json").is_file():
        prepare(fmt, source, out, options=options or {})
    return out
