"""Checks shared by the ``earlyexit`` subcommands: numeric ranges, paths and addresses.

Every argument is checked where it enters: the ``argparse`` types below refuse
a bad value while the command line is parsed, before any work, with a message
that names the accepted range (``earlyexit`` prints it as one line and exits
with code 2). :func:`removed_on_failure` makes a command that fails half-way
leave nothing behind. Standard library only (imported by torch-free commands).

Example:
    >>> int_range(1)("3")
    3
    >>> int_range(1)("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be an integer >= 1, got 0
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "IMAGE_SUFFIXES",
    "OneLineParser",
    "one_line",
    "int_range",
    "float_range",
    "input_file",
    "output_file",
    "image_file",
    "output_dir",
    "check_output_file",
    "check_output_dir",
    "zmq_address",
    "check_bindable",
    "removed_on_failure",
    "atomic_output",
]

# what matplotlib's Agg, PDF, SVG and PS backends write, by file suffix
IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".svgz", ".jpg", ".jpeg", ".eps", ".ps", ".tif",
                  ".tiff", ".webp", ".pgf", ".raw", ".rgba")  # fmt: skip


def one_line(err: BaseException | str) -> str:
    """The text of an error on one line (its lines joined; empty text gives the type name)."""
    text = err if isinstance(err, str) else str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "" if isinstance(err, str) else type(err).__name__
    return " | ".join(lines)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (``PROG: error: ...``), exit code 2.

    Subparsers made with ``add_subparsers`` inherit the class.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _range_text(
    lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False
) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {_num(hi)}"
    return "(any)"


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[lo, hi]`` (either bound may be None).

    Raises (when parsing):
        argparse.ArgumentTypeError: naming the accepted range.
    """
    rng = _range_text(lo, hi)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected an integer {rng}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be an integer {rng}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def float_range(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Callable[[str], float]:
    """An argparse type: a finite number between ``lo`` and ``hi`` (open ends on request).

    Raises (when parsing):
        argparse.ArgumentTypeError: NaN, infinities and values out of range, naming the range.
    """
    rng = _range_text(lo, hi, lo_open, hi_open)

    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected a number {rng}, got {text!r}") from None
        bad = not math.isfinite(value)
        if lo is not None:
            bad |= value <= lo if lo_open else value < lo
        if hi is not None:
            bad |= value >= hi if hi_open else value > hi
        if bad:
            raise argparse.ArgumentTypeError(f"must be a finite number {rng}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def input_file(text: str) -> str:
    """An argparse type: an existing file (not a directory).

    Raises (when parsing):
        argparse.ArgumentTypeError: a missing path or a directory.
    """
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; expected a file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file {text!r} does not exist")
    return text


def check_output_file(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Check that ``path`` can be written as a file: not a directory, in an existing writable one.

    Args:
        path: the file to be written (it may exist; it will be replaced).
        what: how to name it in the error (e.g. ``"-o/--output"``).

    Returns:
        The path.

    Raises:
        ValueError: for a directory, a missing or unwritable parent directory, or an empty name.
    """
    p = Path(path)
    if not str(path).strip():
        raise ValueError(f"{what}: expected a file name, got an empty string")
    if p.is_dir():
        raise ValueError(f"{what} {str(p)!r} is a directory; expected a file name to write")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{what} {str(p)!r}: directory {str(parent)!r} does not exist")
    if not _writable(parent):
        raise ValueError(f"{what} {str(p)!r}: directory {str(parent)!r} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"{what} {str(p)!r} exists and is not writable")
    return p


def _writable(directory: Path) -> bool:
    """Whether a file can be created in ``directory`` (tried: permissions alone mislead root)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".earlyexit-probe-", dir=directory)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return True


def check_output_dir(path: str | os.PathLike[str], what: str = "output directory") -> Path:
    """Check that ``path`` is an existing directory, or one that can be created.

    Raises:
        ValueError: for an existing file, a file among its parents, or no write permission.
    """
    p = Path(path)
    if not str(path).strip():
        raise ValueError(f"{what}: expected a directory name, got an empty string")
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what} {str(p)!r} is a file; expected a directory")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{what} {str(p)!r}: {str(probe)!r} is a file, not a directory")
    if not _writable(probe):
        raise ValueError(f"{what} {str(p)!r}: {str(probe)!r} is not writable")
    return p


def _as_type(check: Callable[[str], Path]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text

    return parse


def output_file(text: str) -> str:
    """An argparse type: a file to write (see :func:`check_output_file`)."""
    return _as_type(lambda t: check_output_file(t, "file"))(text)


def image_file(text: str) -> str:
    """An argparse type: an image file to write, with a suffix matplotlib writes."""
    output_file(text)
    if Path(text).suffix.lower() not in IMAGE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected an image file name ending in one of {', '.join(IMAGE_SUFFIXES)}"
        )
    return text


def output_dir(text: str) -> str:
    """An argparse type: a directory to write into (see :func:`check_output_dir`)."""
    return _as_type(lambda t: check_output_dir(t, "directory"))(text)


_HOST = r"(?:\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)"
_TCP = re.compile(rf"^tcp://({_HOST}):(\*|\d{{1,5}})$")


def zmq_address(bind: bool = False) -> Callable[[str], str]:
    """An argparse type: a ZeroMQ address, ``tcp://HOST:PORT`` or ``ipc://PATH``.

    Args:
        bind: an address to bind (port ``*`` picks a free one, host ``*`` every
            interface); else one to connect to (a host name or address and a port).

    Raises (when parsing):
        argparse.ArgumentTypeError: anything else, naming the accepted forms.
    """
    forms = "tcp://HOST:PORT (PORT 1-65535" + (" or *" if bind else "") + ") or ipc://PATH"

    def parse(text: str) -> str:
        if text.startswith("ipc://") and len(text) > len("ipc://"):
            return text
        m = _TCP.match(text)
        ok = m is not None
        if m:
            host, port = m.groups()
            if not bind and (host == "*" or port == "*"):
                ok = False
            if port != "*" and not 1 <= int(port) <= 65535:
                ok = False
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {forms}, got {text!r}")
        return text

    parse.__name__ = "address"
    return parse


def check_bindable(address: str, what: str) -> None:
    """Bind and release ``address`` once, so that a port in use is refused before any READY.

    Raises:
        ValueError: if ZeroMQ cannot bind it (in use, or not an address of this host).
    """
    import zmq

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind(address)
    except zmq.ZMQError as err:
        raise ValueError(
            f"{what} {address!r} cannot be bound: {err.strerror} (a port in use, or not an "
            "address of this host)"
        ) from None
    finally:
        sock.close(linger=0)


@contextlib.contextmanager
def removed_on_failure(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Create ``directory`` (and missing parents); if the block raises, remove what it added.

    A directory that did not exist is removed with everything in it; in one that
    existed, only the entries the block created are removed (files already there
    stay, though the block may have replaced some).

    Yields:
        The directory, as a Path.
    """
    path = Path(directory)
    check_output_dir(path)
    top: Path | None = None
    probe = path
    while not probe.exists():
        top = probe
        if probe.parent == probe:
            break
        probe = probe.parent
    before = set(os.listdir(path)) if top is None else set()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if top is not None:
            shutil.rmtree(top, ignore_errors=True)
        else:
            for name in set(os.listdir(path)) - before:
                target = path / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        target.unlink()
        raise


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a file atomically through any writer: yields a temporary path beside ``path``.

    The block writes the temporary file (e.g. ``fig.savefig(tmp)``); on success
    it gets the permissions the user's umask gives a new file and replaces
    ``path`` in one step; if the block raises, it is removed and ``path`` is untouched.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> with atomic_output(os.path.join(d, "a.txt")) as tmp:
        ...     _ = tmp.write_text("hi")
        >>> open(os.path.join(d, "a.txt")).read()
        'hi'
    """
    target = check_output_file(path, "file")
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=directory)
    os.close(fd)
    try:
        yield Path(tmp)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
