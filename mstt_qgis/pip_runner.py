"""pip for QGIS's Python, run as a subprocess whose output streams to the caller line by line and
which a cancel kills.

QGIS's Python may have no pip (stock Debian: python3-pip is not a QGIS dependency) or one too
old for ``--dry-run --report`` (pip 22.2). Then pip runs from a pip wheel, which pip supports
(``python pip-X.whl/pip``): the newest one found in the wheel folder given, in the Python's own
``ensurepip`` or in Debian's python3-pip-whl, else downloaded from the package index, checked
against the sha256 the index publishes, and kept beside the dependency folder for next time.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .qgis_python import hidden_window

MIN_PIP = (22, 2)  # --dry-run with --report
WHEEL_DIRS = ("/usr/share/python-wheels",)  # Debian's python3-pip-whl
PIP_WHEEL = re.compile(r"pip-(\d+(?:\.\d+)*)-py3-none-any\.whl")


class PipError(Exception):
    """pip could not be found, fetched or run; the message says what to do."""


@dataclass(frozen=True)
class Pip:
    argv: tuple  # the command up to pip's arguments
    version: tuple
    raw_progress: bool  # "--progress-bar raw": "Progress <done> of <total>" lines while downloading

    def describe(self) -> str:
        how = "QGIS's Python's own pip" if self.argv[1:2] == ("-m",) else f"pip from {Path(self.argv[1]).parent.name}"
        return f"{how} {'.'.join(map(str, self.version))}"


def version_tuple(text: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def own_pip(python: str, env: dict) -> Pip | None:
    """QGIS's Python's pip, if it has one at least MIN_PIP."""
    try:
        out = subprocess.run([python, "-m", "pip", "install", "--help"], capture_output=True, text=True,
                             timeout=120, env=env, **hidden_window())
        ver = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True,
                             timeout=120, env=env, **hidden_window())
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or ver.returncode != 0 or not ver.stdout.startswith("pip "):
        return None
    version = version_tuple(ver.stdout.split()[1])
    return Pip((python, "-m", "pip"), version, "raw]" in out.stdout) if version >= MIN_PIP else None


def wheel_pip(python: str, wheel: Path) -> Pip:
    version = version_tuple(PIP_WHEEL.fullmatch(wheel.name).group(1))
    return Pip((python, str(wheel / "pip")), version, version >= (24, 1))


def local_pip_wheels(folders) -> list:
    """pip wheels on disk, newest first, those too old for --report left out."""
    found = []
    for folder in folders:
        if folder and Path(folder).is_dir():
            found += [p for p in Path(folder).glob("pip-*.whl") if PIP_WHEEL.fullmatch(p.name)]
    found = [p for p in found if version_tuple(PIP_WHEEL.fullmatch(p.name).group(1)) >= MIN_PIP]
    return sorted(found, key=lambda p: version_tuple(PIP_WHEEL.fullmatch(p.name).group(1)), reverse=True)


def ensurepip_folder() -> str | None:
    try:
        import ensurepip

        folder = Path(ensurepip.__file__).parent / "_bundled"
        return str(folder) if folder.is_dir() else None
    except ImportError:
        return None


def download_pip(index_url: str, cache: Path, log) -> Path:
    """The newest pip wheel on a PEP 503 index (PyPI, a mirror, or a file:// index), its sha256
    checked when the index gives one."""
    page_url = index_url.rstrip("/") + "/pip/"
    try:
        with urllib.request.urlopen(page_url, timeout=60) as page:
            html = page.read().decode("utf-8", "replace")
    except OSError as exc:
        raise PipError(f"QGIS's Python has no pip, and pip could not be fetched from {page_url}: {exc}") from None
    links = {}
    for href in re.findall(r'href="([^"]+)"', html):
        url = urllib.parse.urljoin(page_url, href.replace("&amp;", "&"))
        name = Path(urllib.parse.urlparse(url).path).name
        if PIP_WHEEL.fullmatch(name):
            links[name] = url
    if not links:
        raise PipError(f"no pip wheel listed at {page_url}")
    name = max(links, key=lambda n: version_tuple(PIP_WHEEL.fullmatch(n).group(1)))
    url, _, fragment = links[name].partition("#")
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / name
    log(f"downloading {name} (QGIS's Python has no usable pip)")
    with urllib.request.urlopen(url, timeout=300) as src:
        data = src.read()
    algo, _, digest = fragment.partition("=")
    if algo in hashlib.algorithms_guaranteed and hashlib.new(algo, data).hexdigest() != digest:
        raise PipError(f"{name} from {url} does not match the index's {algo}; not used")
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def find_pip(python: str, env: dict, cache: Path, find_links: str | None, index_url: str | None, log) -> Pip:
    """A pip able to run ``--dry-run --report`` for ``python``; see the module docstring."""
    pip = own_pip(python, env)
    if pip is not None:
        return pip
    wheels = local_pip_wheels([find_links, str(cache), ensurepip_folder(), *WHEEL_DIRS])
    if wheels:
        log(f"QGIS's Python has no pip {'.'.join(map(str, MIN_PIP))} or newer: running pip from {wheels[0]}")
        return wheel_pip(python, wheels[0])
    if not index_url:
        raise PipError("QGIS's Python has no pip, and there is no pip wheel in the wheel folder: "
                       "put a pip-*.whl there, or give a package index")
    return wheel_pip(python, download_pip(index_url, cache, log))


def run_pip(pip: Pip, args: list, env: dict, on_line, is_canceled, poll_s: float = 0.2) -> int:
    """Run pip with ``args``, passing each output line (stdout and stderr together) to
    ``on_line``; kill it when ``is_canceled()`` turns true. Returns pip's exit code (None
    when canceled)."""
    proc = subprocess.Popen([*pip.argv, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            text=True, encoding="utf-8", errors="replace", bufsize=1, **hidden_window())
    lines: list = []
    reader = _start_reader(proc, lines)
    try:
        while proc.poll() is None or reader.is_alive() or lines:
            while lines:
                on_line(lines.pop(0))
            if is_canceled():
                _stop(proc)
                return None
            time.sleep(poll_s)
        return proc.returncode
    finally:
        if proc.poll() is None:
            _stop(proc)


def _start_reader(proc, lines: list):
    """A thread that moves pip's output into ``lines`` (a read would block the cancel check)."""
    import threading

    def read():
        for line in proc.stdout:
            lines.append(line.rstrip("\r\n"))

    thread = threading.Thread(target=read, name="pip-output", daemon=True)
    thread.start()
    return thread


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pip_env(base: dict | None = None, folder: Path | None = None) -> dict:
    """The environment pip runs in: QGIS's own (proxies, certificates, pip's configuration), with
    the dependency folder first on the path when pip must see what is already in it, and no
    version check or colour codes in its output."""
    env = dict(os.environ if base is None else base)
    if folder is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(folder)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_COLOR="1", PIP_NO_INPUT="1", PYTHONIOENCODING="utf-8")
    return env


class PipProgress:
    """pip's output as progress over [lo, hi): one step per package it collects or downloads,
    refined by "Progress <done> of <total>" lines (``--progress-bar raw``) within a download.
    Its lines go to ``hooks.console``; a progress text only when the stage or a download's
    tenth changes (each text is a line in the dialog's log)."""

    def __init__(self, hooks, lo: float, hi: float, expected: int = 1):
        self.hooks, self.lo, self.hi = hooks, lo, hi
        self.expected, self.done, self.current = max(1, expected), 0, ""
        self.tenth = None

    def __call__(self, line: str) -> None:
        text = line.strip()
        if text.startswith("Progress ") and " of " in text:
            a, _, b = text[len("Progress "):].partition(" of ")
            if a.isdigit() and b.isdigit() and int(b):
                tenth = 10 * int(a) // int(b)
                label = f"downloading {self.current}: {int(a) / 1e6:.0f} of {int(b) / 1e6:.0f} MB"
                self._show(int(a) / int(b), label if tenth != self.tenth else None)
                self.tenth = tenth
            return  # several a second: progress only, not the log
        self.hooks.console(line)
        for word in ("Collecting ", "Downloading ", "Processing ", "Using cached "):
            if text.startswith(word):
                self.done += word != "Downloading "  # a download follows its "Collecting" line
                self.current = text[len(word):].split(" ")[0].rsplit("/", 1)[-1]
                self.tenth = None
                self._show(0.0, None)
        if text.startswith("Installing collected packages"):
            self._show(1.0, "unpacking " + text.split(":", 1)[-1].strip())

    def _show(self, within: float, text) -> None:
        self.expected = max(self.expected, self.done)
        fraction = min(1.0, (max(self.done - 1, 0) + within) / self.expected)
        self.hooks.progress(self.lo + (self.hi - self.lo) * fraction, text)
