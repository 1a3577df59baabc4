"""Check that the README's install lines resolve to the torch build they promise, against the public indexes.

    python -m benchmarks.check_install            # writes benchmarks/results/check_install.json

Each line in ``INSTALL_LINES`` (the README quotes them; tests/test_install_lines.py keeps the two in sync)
runs as ``pip install --dry-run --ignore-installed --report`` with this machine's pip configuration switched
off (PIP_CONFIG_FILE=/dev/null, no PIP_* variables): no local wheel folder, no local index, only the
public indexes a fresh machine sees. The CPU line must resolve to a ``+cpu`` torch with no NVIDIA
wheels; the GPU line (the default index) to the CUDA build. A line whose index cannot be reached is
recorded as unchecked, not as passed. Nothing is installed; pip downloads only package metadata.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TORCH = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# What a machine runs before the Quickstart. The default index's torch for Linux x86_64 is the CUDA build.
INSTALL_LINES = {
    "cpu": f"pip install {TORCH} --index-url {CPU_INDEX}",
    "gpu": f"pip install {TORCH}",
}


def resolve(line: str, timeout_s: float = 600) -> dict[str, Any]:
    """The packages ``line`` would install on a fresh machine (pip's --report), or why it could not tell."""
    args = shlex.split(line)
    assert args[:2] == ["pip", "install"], line
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf: no local wheel folder, index or constraints
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "--disable-pip-version-check", *args[2:]]
        start = time.perf_counter()
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            return {"status": "unchecked", "why": f"pip did not finish in {timeout_s:.0f} s"}
        took = round(time.perf_counter() - start, 1)
        if out.returncode != 0 or not report.is_file():
            lines = out.stderr.strip().splitlines() or ["no output"]
            # An index this machine cannot reach says nothing about the line: pip retries, then finds "none".
            unreachable = [ln for ln in lines if "NewConnectionError" in ln or "Network is unreachable" in ln]
            if unreachable:
                errno = re.search(r"\[Errno [^\]]*\] [^'\"]*", unreachable[-1])
                reason = errno.group() if errno else "no connection"
                return {"status": "unchecked", "seconds": took,
                        "why": f"its index is unreachable from this machine ({reason})"}
            return {"status": "failed", "why": lines[-1][:300], "seconds": took}
        installs = json.loads(report.read_text())["install"]
    packages = {p["metadata"]["name"].lower(): p["metadata"]["version"] for p in installs}
    return {"status": "resolved", "seconds": took, "torch": packages.get("torch"),
            "nvidia_packages": sorted(n for n in packages if n.startswith("nvidia-")),
            "packages": len(packages)}


def judge(kind: str, got: dict[str, Any]) -> dict[str, Any]:
    if got["status"] != "resolved":
        return got
    torch_version = got["torch"] or ""
    if kind == "cpu":
        ok = torch_version.endswith("+cpu") and not got["nvidia_packages"]
        expect = "torch 2.13.0+cpu, no nvidia-* wheels"
    else:
        ok = torch_version.startswith("2.13.0") and not torch_version.endswith("+cpu")
        expect = "torch 2.13.0 (the CUDA build: nvidia-* wheels beside it)"
    return {**got, "status": "ok" if ok else "wrong build", "expected": expect}


def main() -> int:
    results = {kind: {"line": line, **judge(kind, resolve(line))} for kind, line in INSTALL_LINES.items()}
    for kind, r in results.items():
        detail = (f"torch {r['torch']}, {len(r['nvidia_packages'])} nvidia-* of {r['packages']} packages"
                  if "torch" in r else r.get("why", ""))
        print(f"{kind}: {r['status']:<10} {r['line']}\n      {detail}")
    from benchmarks.common import write_result

    write_result("check_install", {"command": "python -m benchmarks.check_install", "lines": results})
    return 0 if all(r["status"] in ("ok", "unchecked") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
