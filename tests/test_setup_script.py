"""scripts/setup.sh (run by demo.sh and test.sh) installs once: pip runs again only when the
package's requirements change, not on every demo."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_runs_pip_only_when_the_requirements_change(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("scripts/setup.sh", "pyproject.toml", "constraints.txt"):
        shutil.copy(ROOT / name, repo / name)
    log = tmp_path / "calls.log"
    fake = repo / ".venv" / "bin" / "python"  # stands in for the environment's python: records its calls
    fake.parent.mkdir(parents=True)
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\nexit 0\n')
    fake.chmod(0o755)

    def pip_calls() -> int:
        subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, check=True)
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return sum("pip install" in c for c in calls)

    assert pip_calls() == 2  # a new environment: pip itself, then the package
    assert pip_calls() == 0  # nothing changed
    (repo / "constraints.txt").write_text((repo / "constraints.txt").read_text() + "\n")
    assert pip_calls() == 2  # the requirements changed
