"""README.md is a user's document that works as written: at most 300 lines, every command of its bash blocks
checked (tools/check_readme.py: scripts, flags, files, outputs in runs/, extras, the CI test command), and its
quick-start command writes nothing tracked."""
import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import README, REPO_ROOT


def load_checker():
    spec = importlib.util.spec_from_file_location("check_readme", os.path.join(REPO_ROOT, "tools", "check_readme.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_short():
    with open(README, encoding="utf-8") as handle:
        assert len(handle.read().splitlines()) <= 300


def test_every_readme_command_checks_out():
    assert load_checker().check() == []


def test_the_checker_finds_each_kind_of_problem(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("\n".join([
        "```bash",
        'python3.11 -m venv .venv && .venv/bin/pip install -e ".[dev,nosuch]" && .venv/bin/python -m pytest -q',
        "python inference.py --img_path assets/missing.jpg --scor_threshold 0.5",
        "python inference.py --img_path assets/test_00002330.jpg --output assets/out.jpg",
        "python nosuch.py --x 1",
        "python mAP/compute_mAP.py --gt_dir /path/to/gt \\",
        "    --output_dir runs/ok   # a comment",
        "```"]) + "\n")
    problems = load_checker().check(str(readme))
    assert problems == [
        "pip install: no extra [nosuch] in pyproject.toml",
        "inference.py: assets/missing.jpg does not exist",
        "inference.py: --scor_threshold is not a flag of this script",
        "inference.py --output assets/out.jpg: writes into a tracked place (use runs/)",
        "nosuch.py: no such script",
        "README.md: no bash line ends with the test command of .ci/run ('python -m pytest -q tests')",
    ]


@pytest.mark.slow
def test_the_quick_start_command_changes_no_tracked_file():
    """The quick start's detection, run as written: its output lands in runs/ (git-ignored) and no tracked
    file under assets/ or checkpoints/ changes."""
    quick_start = next(line for line in load_checker().bash_lines(open(README, encoding="utf-8").read())
                       if "inference.py" in line)
    script, arguments = load_checker().python_commands(quick_start)[-1]

    def status():
        return subprocess.run(["git", "status", "--porcelain", "--", "assets", "checkpoints", "README.md"],
                              cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    before = status()
    run = subprocess.run([sys.executable, script, *arguments], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    written = run.stdout.strip().splitlines()[-1].split(" written to ")[-1]
    assert os.path.relpath(written, REPO_ROOT).startswith("runs" + os.sep) and os.path.isfile(written)
    ignored = subprocess.run(["git", "check-ignore", "-q", written], cwd=REPO_ROOT)
    assert ignored.returncode == 0, f"{written} is not ignored by git"
    assert status() == before
