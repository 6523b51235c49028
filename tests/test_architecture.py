"""The layering of ARCHITECTURE.md: one layer per package, every import of a module goes to its own layer or a
lower one, no import circle, the command layer (``cli``) imported by nothing but the scripts, and scripts that
only call their ``cli`` module."""
import ast
import os
import types

import pytest
from conftest import REPO_ROOT

from cli import PACKAGES, launched_as_script

LAYER = {   # package -> layer (ARCHITECTURE.md, "Layers"): a module imports only from its layer or lower ones
    "components": 0,                 # core
    "dataset": 1, "network": 1,      # data, model
    "runtime": 2,                    # inference
    "mAP": 3,                        # evaluation
    "training": 4,                   # training
    "deploy": 5, "serving": 5,       # deployment
    "benchmarks": 6,                 # benchmarks
    "cli": 7,                        # commands
}
# the scripts inside the packages, where users of the original look (the top-level *.py files are scripts too)
PACKAGE_SCRIPTS = ("mAP/detect.py", "mAP/compute_mAP.py", "mAP/analyse_errors.py", "mAP/bootstrap.py",
                   "mAP/unlabelled_faces.py", "dataset/voc_to_tfrecord.py", "dataset/check_dataset.py",
                   "components/kmeans.py")
RUN_AS_PROCESS = {"cli.stderr_filter"}   # the filter process started by cli/__init__.py: its __main__ block runs it


def script_paths():
    """Every script, relative to the repository: the top-level wrappers and PACKAGE_SCRIPTS."""
    top = sorted(name for name in os.listdir(REPO_ROOT) if name.endswith(".py"))
    return top + list(PACKAGE_SCRIPTS)


def modules():
    """Dotted names of every module of the packages (``__init__`` aside; the scripts in them aside)."""
    names = []
    for package in LAYER:
        for name in sorted(os.listdir(os.path.join(REPO_ROOT, package))):
            if name.endswith(".py") and name != "__init__.py" and f"{package}/{name}" not in PACKAGE_SCRIPTS:
                names.append(f"{package}.{name[:-3]}")
    return names


MODULES = modules()
LIBRARY = [module for module in MODULES if not module.startswith("cli.")]


def parse(path):
    with open(os.path.join(REPO_ROOT, path), encoding="utf-8") as file:
        return ast.parse(file.read())


def module_path(module):
    return os.path.join(*module.split(".")) + ".py"


def imported_modules(tree):
    """First-party modules (and packages) a module imports anywhere: top level, functions, TYPE_CHECKING."""
    known = set(MODULES) | set(LAYER)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


GRAPH = {module: imported_modules(parse(module_path(module))) - {module} for module in MODULES}


def has_main_block(tree):
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body)


def test_every_package_has_a_layer():
    assert sorted(PACKAGES) == sorted(LAYER)
    found = sorted(name for name in os.listdir(REPO_ROOT)
                   if os.path.isfile(os.path.join(REPO_ROOT, name, "__init__.py")))
    assert found == sorted(LAYER)


@pytest.mark.parametrize("module", MODULES)
def test_imports_flow_one_way(module):
    own = LAYER[module.split(".")[0]]
    upward = sorted(name for name in GRAPH[module] if LAYER[name.split(".")[0]] > own)
    assert upward == [], f"{module} (layer {own}) imports from a higher layer: {upward}"


def test_the_library_never_imports_the_command_layer():
    importers = sorted(f"{module} -> {name}" for module in LIBRARY for name in GRAPH[module]
                       if name.split(".")[0] == "cli")
    assert importers == []


def test_a_command_imports_no_other_command():
    """A cli module imports the skeleton (``cli``), never another command; what two commands share lives in the
    library."""
    crossing = sorted(f"{module} -> {name}" for module in MODULES if module.startswith("cli.")
                      for name in GRAPH[module] if name.startswith("cli."))
    assert crossing == []


def find_cycle(graph):
    """One import circle of ``graph`` ({module: imported modules}) as a list [a, b, ..., a], or None (DFS)."""
    state = {}   # module -> "open" while on the DFS path, "done" once all it reaches is explored
    path = []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for name in sorted(graph.get(module, ())):
            if state.get(name) == "open":
                return path[path.index(name):] + [name]
            if name not in state:
                cycle = visit(name)
                if cycle:
                    return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_a_circle_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def package_graph():
    """{package: packages its modules import}, itself left out."""
    graph = {package: set() for package in LAYER}
    for module, names in GRAPH.items():
        graph[module.split(".")[0]].update(name.split(".")[0] for name in names)
    return {package: names - {package} for package, names in graph.items()}


def test_no_import_circle_between_packages():
    assert find_cycle(package_graph()) is None


def test_no_import_circle():
    """No circle between modules either (what two deploy modules share is in ``deploy.export_common``)."""
    graph = {module: {name for name in names if name in GRAPH} for module, names in GRAPH.items()}
    assert find_cycle(graph) is None


@pytest.mark.parametrize("module", MODULES)
def test_no_module_runs_as_a_script(module):
    """Only the scripts have a ``__main__`` block (and the stderr filter, which cli/__init__.py starts as a
    process): a command runs as its script path or its console entry point, never as ``python -m``."""
    assert has_main_block(parse(module_path(module))) == (module in RUN_AS_PROCESS)


@pytest.mark.parametrize("script", script_paths())
def test_a_script_only_calls_its_command(script):
    """``import sys``, ``from cli.<name> import main`` (importing ``cli`` first, which keeps the native
    libraries' start-up lines off stderr), ``sys.exit(main())`` under ``__main__``; recognised as a script."""
    tree = parse(script)
    imports = [ast.unparse(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    assert imports[0] == "import sys" and len(imports) == 2, imports
    command = imports[1].removeprefix("from ").removesuffix(" import main")
    assert command in MODULES and command.startswith("cli."), imports
    assert has_main_block(tree)
    assert launched_as_script(types.SimpleNamespace(__file__=os.path.join(REPO_ROOT, script)))
