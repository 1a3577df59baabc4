"""The README's install lines are the ones benchmarks/check_install.py checks, and CI runs the README's
test command; the Quickstart stays two commands (no network here: the dry run itself is the script's)."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.check_install import INSTALL_LINES

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_checked_install_lines_are_the_readmes():
    readme = (ROOT / "README.md").read_text()
    for kind, line in INSTALL_LINES.items():
        assert f"`{line}`" in readme, f"README does not give the {kind} line the script checks: {line}"


def test_quickstart_is_two_commands_and_ci_runs_the_second():
    demo, tests = quickstart_commands()
    assert demo.endswith("&& raygr demo") and tests.endswith("&& python -m pytest -q")
    assert demo.split(" && ")[0] == tests.split(" && ")[0]  # one install line for both
    assert tests in (ROOT / ".ci" / "run").read_text()
