"""Tests of components/atomic_io.py: files are replaced only by a complete write, and no temporary file remains."""
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from components.atomic_io import atomic_path, save_figure_atomically, write_text_atomically


def test_atomic_path_renames_the_temporary_file_over_the_target(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(str(target), suffix=".txt") as temporary:
        assert os.path.dirname(temporary) == str(tmp_path) and temporary.endswith(".txt")
        assert temporary != str(target)
        with open(temporary, "w") as handle:
            handle.write("new")
        assert target.read_text() == "old"              # not replaced before the block ends
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_file(tmp_path, error):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(type(error)):
        with atomic_path(str(target)) as temporary:
            with open(temporary, "w") as handle:
                handle.write("half")
            raise error
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_text_atomically(str(tmp_path / "out.txt"), b"bytes, not text")   # fails after opening the file
    assert os.listdir(tmp_path) == []


def test_write_text_atomically_writes_utf8_and_passes_newline(tmp_path):
    path = tmp_path / "out.csv"
    write_text_atomically(str(path), "a,é\r\nb\n", newline="")
    assert path.read_bytes() == "a,é\r\nb\n".encode()
    write_text_atomically(str(path), "x\n")
    assert path.read_bytes() == f"x{os.linesep}".encode()
    assert os.listdir(tmp_path) == ["out.csv"]


def test_save_figure_atomically_writes_a_png(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(1, 1))
    FigureCanvasAgg(figure)
    figure.add_subplot().plot([0, 1], [1, 0])
    path = tmp_path / "plot.png"
    save_figure_atomically(figure, str(path), dpi=20)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["plot.png"]


def test_importing_it_does_not_import_tensorflow():
    code = "import sys; import components.atomic_io; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
