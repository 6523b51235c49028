"""Keep the start-up lines of native libraries (TensorFlow, absl, oneDNN, XNNPACK / LiteRT, onnxruntime) off
the terminal.

Those libraries write from C++ straight to file descriptor 2, whatever Python's logging or
``TF_CPP_MIN_LOG_LEVEL`` say, and which lines appear depends on the CPU (e.g. oneDNN's notice on AMD EPYC).
:func:`install` points descriptor 2 at a pipe that a small child process (this file run as a script) reads:
lines that match :data:`NOISE` are dropped, everything else (tracebacks, our ``error: ...`` lines, progress
bars ending in ``\\r``) goes on to the real stderr unchanged. :func:`restore` (registered with ``atexit``) puts
the real stderr back and waits for the child to drain the pipe, so nothing is lost at exit, on errors or on
Ctrl-C; when the process dies (an abort, a segfault) the child still drains what was written. Numerics are
untouched: only text is filtered.
Standard library only.
"""
import atexit
import os
import re
import select
import sys

NOISE = re.compile("|".join([
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"WARNING: Logging before InitGoogleLogging\(\) is written to STDERR",
    r"[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] ",                        # absl / glog: I0000 ... port.cc:153]
    r"E\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] Unable to register cu\w+ factory",   # GPU builds on CPU
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] [\w./-]+:\d+\] ",                 # TensorFlow's older format
    r"INFO: (Created|Initialized) TensorFlow Lite",                                # LiteRT / XNNPACK delegate
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \[[IW]:onnxruntime:",                    # onnxruntime warnings
    r"To enable the following instructions: .* in other operations, rebuild TensorFlow",
]))

VERBOSE_FLAG = "--verbose"
VERBOSE_ENVIRONMENT = "FACEMASK_VERBOSE"   # set to 1: library lines as they come, as with --verbose

_state = {}

def is_noise(line):
    """Whether ``line`` (text, its terminator included or not) is a known library start-up line."""
    return NOISE.match(line.lstrip("\r")) is not None


def split_segments(buffer):
    """``(complete, rest)``: the segments of ``buffer`` (bytes) that end in ``\\n`` or ``\\r``, each with its
    terminator, and the unterminated rest."""
    segments = re.findall(rb"[^\r\n]*(?:\r\n|\n|\r)", buffer)
    return segments, buffer[sum(len(segment) for segment in segments):]


def filter_segments(segments):
    """The bytes of ``segments`` that are not noise, joined."""
    kept = [s for s in segments if not is_noise(s.decode("utf-8", "replace"))]
    return b"".join(kept)


def _write_all(fd, data):
    while data:
        try:
            written = os.write(fd, data)
        except OSError:
            return
        data = data[written:]


def pump(read_fd, write_fd):
    """Copy ``read_fd`` to ``write_fd`` without the noise lines until every writer has closed the pipe; a piece
    without a line end (a prompt, a progress bar before its ``\\r``) is passed on after a 50 ms pause."""
    pending = b""
    while True:
        ready, _, _ = select.select([read_fd], [], [], 0.05)
        if not ready:
            if pending:
                _write_all(write_fd, filter_segments([pending]))
                pending = b""
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            if pending:
                _write_all(write_fd, filter_segments([pending]))
            return
        segments, pending = split_segments(pending + chunk)
        _write_all(write_fd, filter_segments(segments))


def wanted(argv=None, environ=None):
    """Whether to filter: not with ``--verbose`` on the command line or ``FACEMASK_VERBOSE=1``."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    return VERBOSE_FLAG not in argv[1:] and environ.get(VERBOSE_ENVIRONMENT, "") in ("", "0")


def install():
    """Filter descriptor 2 from now on (idempotent; POSIX only): a small child process reads the pipe and writes
    what is kept to the real stderr, so that it drains even when this process dies (an abort, a segfault).
    Returns whether the filter runs."""
    if _state:
        return True
    if os.name != "posix":
        return False
    import subprocess
    try:
        saved = os.dup(2)
    except OSError:
        return False
    read_fd, write_fd = os.pipe()
    try:
        child = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__)], stdin=read_fd,
                                 stdout=subprocess.DEVNULL, stderr=saved, close_fds=True)
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        os.close(saved)
        return False
    os.close(read_fd)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    _state.update(saved=saved, child=child)
    atexit.register(restore)
    return True


def restore():
    """Give descriptor 2 back to the real stderr and wait until the filter has passed on what it holds."""
    if not _state:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os.dup2(_state["saved"], 2)   # the pipe's last writer here: the filter sees the end once children are done
    try:
        _state["child"].wait(timeout=5)
    except Exception:   # noqa: BLE001 - never fail an exit over the filter
        pass
    _state.clear()


if __name__ == "__main__":   # the filter process: stdin is the pipe, stderr the real stderr
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the whole group: keep draining until the end
    pump(0, 2)
