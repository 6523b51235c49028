"""Check the commands of README.md's bash blocks without running them (fast; ``python tools/check_readme.py``).

For every ``python SCRIPT.py ...`` of a bash block: the script exists and each ``--flag`` it is given appears in
its ``--help``; every repository file or folder it names (``assets/``, ``data/``, ``checkpoints/``, ...) exists,
except the values of output flags, which must lie in ``runs/`` or another git-ignored place (no README
command writes into a tracked file); every ``pip install -e ".[extra]"`` names extras of pyproject.toml; and
the quick start's test command is the one ``.ci/run`` runs. Prints one line per problem; exit status 1 when
there is any. Paths outside the repository (``/path/to/ILC2021``) are the user's and are not checked.
"""
import os
import re
import shlex
import subprocess
import sys
import tomllib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASH_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
PYTHON_COMMAND = re.compile(r"(?:^|&&|;|\|\||\bdo\b|\bthen\b)\s*(?:[A-Z_]+=\S+\s+)*(?:\.venv/bin/)?"
                            r"python(?:3(?:\.\d+)?)?\s+(?!-m\s+(?:venv|pip)\b)(.+?)(?=&&|;|\|\||\bdone\b|$)")
PIP_EXTRAS = re.compile(r"pip install[^&;]*?-e\s+\"?\.\[([\w,-]+)\]\"?")
OUTPUT_FLAGS = ("--output", "--output_dir", "--output_file", "--checkpoint_dir", "--export_dir", "--log_dir")
REPO_PREFIXES = ("assets/", "data/", "checkpoints/", "dataset/", "tests/", "docs/", "mAP/", "components/", "cli/")
CI_TEST_COMMAND = "-m pytest -q tests"


def bash_lines(readme_text):
    """The logical lines of the README's bash blocks (continuations joined, comments dropped)."""
    lines = []
    for block in BASH_BLOCK.findall(readme_text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def python_commands(line):
    """[(script or module, [arguments])] of the python calls in one logical line."""
    commands = []
    for match in PYTHON_COMMAND.finditer(line):
        words = shlex.split(match.group(1))
        if words[:1] == ["-m"]:
            commands.append(("-m " + words[1], words[2:]))
        elif words:
            commands.append((words[0], words[1:]))
    return commands


CLI_MODULE = re.compile(r"^\s*from (cli\.\w+) import main", re.M)
_flag_cache = {}


def script_flags(script):
    """The flags of ``python SCRIPT`` (set of ``--name``): from its parser (``cli/<name>.py: build_parser``,
    built in this process), else from its ``--help``; None when neither works."""
    if script not in _flag_cache:
        source = open(os.path.join(REPO_ROOT, script), encoding="utf-8").read()
        module = CLI_MODULE.search(source)
        if module:
            import importlib
            parser = importlib.import_module(module.group(1)).build_parser()
            _flag_cache[script] = {flag for flag in parser._option_string_actions if flag.startswith("--")}
        else:
            run = subprocess.run([sys.executable, os.path.join(REPO_ROOT, script), "--help"], cwd=REPO_ROOT,
                                 capture_output=True, text=True, timeout=300)
            _flag_cache[script] = set(re.findall(r"(--[\w-]+)", run.stdout)) if run.returncode == 0 else None
    return _flag_cache[script]


def is_ignored(path):
    """Whether git ignores ``path`` (relative to the repository; it need not exist)."""
    return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO_ROOT).returncode == 0


def check_command(script, arguments):
    """Problems of one ``python SCRIPT ARGUMENTS`` (list of strings)."""
    if script.startswith("-m "):
        return []
    if not os.path.isfile(os.path.join(REPO_ROOT, script)):
        return [f"{script}: no such script"]
    problems = []
    flags = script_flags(script)
    if flags is None:
        return [f"{script} --help fails"]
    previous = None
    for word in arguments:
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            if name not in flags:
                problems.append(f"{script}: {name} is not a flag of this script")
        elif previous in OUTPUT_FLAGS:
            if not os.path.isabs(word) and not is_ignored(word.rstrip("/") or word):
                problems.append(f"{script} {previous} {word}: writes into a tracked place (use runs/)")
        else:
            for path in word.split(","):
                if path.startswith(REPO_PREFIXES) and not os.path.exists(os.path.join(REPO_ROOT, path)) \
                        and not is_ignored(path):
                    problems.append(f"{script}: {path} does not exist")
        previous = word if word.startswith("--") else None
    return problems


def check(readme_path=None):
    """Every problem of the README's commands (list of lines)."""
    text = open(readme_path or os.path.join(REPO_ROOT, "README.md"), encoding="utf-8").read()
    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as handle:
        extras = set(tomllib.load(handle)["project"].get("optional-dependencies", {}))
    problems = []
    lines = bash_lines(text)
    for line in lines:
        for names in PIP_EXTRAS.findall(line):
            problems += [f"pip install: no extra [{name}] in pyproject.toml" for name in names.split(",")
                         if name not in extras]
        for script, arguments in python_commands(line):
            problems += check_command(script, arguments)
    ci = open(os.path.join(REPO_ROOT, ".ci", "run"), encoding="utf-8").read()
    ci_tests = [line for line in ci.splitlines() if " -m pytest " in line and not line.lstrip().startswith("#")]
    if not ci_tests or not ci_tests[-1].rstrip().endswith(CI_TEST_COMMAND):
        problems.append(f".ci/run: its test command does not end with '{CI_TEST_COMMAND}'")
    if not any(line.endswith(f"python {CI_TEST_COMMAND}") for line in lines):
        problems.append(f"README.md: no bash line ends with the test command of .ci/run ('python {CI_TEST_COMMAND}')")
    return problems


def main():
    problems = check()
    for problem in problems:
        print(problem)
    print(f"README.md: {len(problems)} problem(s)" if problems else "README.md: every command checked")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
