"""Which paths leadtemp may write and remove.

- A run's working state lives in a folder leadtemp creates itself, marked by a file ``.leadtemp-work``
  holding the run's key; only a folder holding that marker is ever removed, never a user's path.
- Outputs are checked against every input and every other output before any work: the same file
  (resolved, symlinks and hard links included), inside an input folder, or an input inside a work folder.
- Output locations are probed before any work: the folder exists or can be created (and is removed
  again by the probe) and takes a new file.
- Output files get the permissions a plain ``open()`` gives a new file (``0o666`` less the umask).
- One run at a time per working folder (POSIX): an exclusive ``flock`` on a file in it, released when the
  process ends however it ends.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from leadtemp.core.errors import ConfigError, RunLocked, StorageError

try:
    import fcntl
except ImportError:  # not a POSIX system: runs are not locked there
    fcntl = None

WORK_MARKER = ".leadtemp-work"  # in every working folder leadtemp creates; holds the run's key
LOCK_FILE = "lock"


def is_local(location: str | Path) -> bool:
    """A path on this machine (not a cluster URI such as s3a://bucket/x or dbfs:/x)."""
    text = str(location)
    return "://" not in text and not text.startswith("dbfs:")


def resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the process's umask."""
    mask = os.umask(0o022)  # reading the umask means setting it; it is put back at once
    os.umask(mask)
    return 0o666 & ~mask


def reason(exc: OSError) -> str:
    """An OSError in words, without the path (the message names it already)."""
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return exc.strerror or str(exc)


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """OSError (permission denied, disk full, not a folder...) as one line naming ``what``."""
    try:
        yield
    except OSError as exc:
        raise StorageError(f"{what}: {reason(exc)}") from exc


# -- what is whose -----------------------------------------------------------------------------------

def work_folder_of(path: Path) -> Path | None:
    """The leadtemp working folder ``path`` lies in (or is), if any."""
    for folder in (path, *path.parents):
        if (folder / WORK_MARKER).is_file():
            return folder
    return None


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_separate(inputs: list[tuple[str, Path]], outputs: list[tuple[str, Path]],
                   work_base: tuple[str, Path] | None = None) -> None:
    """Refuse, before any work, an output that would write over an input, another output or a work folder.

    ``inputs``/``outputs``: (what, path as given) pairs, e.g. ("--out", "scores.csv"); folders allowed
    as inputs. ``work_base``: the folder in which the run's working folder is created.
    """
    ins = [(what, given, resolved(given)) for what, given in inputs]
    outs = [(what, given, resolved(given)) for what, given in outputs]
    for what, given, path in ins:
        if (owner := work_folder_of(path)) is not None:
            raise ConfigError(f"{what} {given} lies in {owner}, a working folder of leadtemp that is removed when its "
                              "run finishes; move the data elsewhere")
    for i, (what, given, path) in enumerate(outs):
        for in_what, in_given, source in ins:
            if _same(path, source):
                raise ConfigError(f"{what} {given} is the {in_what} input {in_given}: leadtemp never writes over "
                                  "an input; choose another file")
            if source.is_dir() and source in path.parents:
                raise ConfigError(f"{what} {given} is inside the {in_what} input folder {in_given}: leadtemp "
                                  "never writes into an input; choose another place")
        for other_what, other_given, other in outs[:i]:
            if _same(path, other):
                raise ConfigError(f"{what} {given} is the same file as {other_what} {other_given}; give each output "
                                  "its own file")
        if (owner := work_folder_of(path)) is not None:
            raise ConfigError(f"{what} {given} lies in {owner}, a working folder of leadtemp that is removed when its "
                              "run finishes; choose another place")
    if work_base is not None:
        what, given = work_base
        base = resolved(given)
        for in_what, in_given, source in ins:
            if _same(base, source) or (source.is_dir() and source in base.parents):
                raise ConfigError(f"{what} {given} is (inside) the {in_what} input {in_given}: leadtemp never writes "
                                  "into an input; choose another folder")


# -- can it be written? -------------------------------------------------------------------------------

def _missing_parents(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


@contextmanager
def _probe_folder(what: str, folder: Path) -> Iterator[None]:
    """Create ``folder`` (and missing parents) for the probe, and remove what the probe created."""
    created = _missing_parents(folder)
    try:
        for path in created:
            path.mkdir()
        yield
    except OSError as exc:
        raise StorageError(f"{what}: cannot write in {folder}: {reason(exc)}") from exc
    finally:
        for path in reversed(created):
            try:
                path.rmdir()
            except OSError:
                pass


def write_text_atomic(text: str, out: Path, what: str) -> Path:
    """Write a text file atomically (a reader never sees half of it): a temporary file beside ``out``, then renamed;
    failures as one line naming ``what``. The file gets the mode ``open()`` gives a new file (0o666 less the umask),
    also when it replaces one: a report or a card on a shared drive opens for whoever may read there."""
    with storage_errors(f"{what} {out}"):
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, file_mode())  # mkstemp makes it 0o600
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return out


def check_writable_file(what: str, path: str | Path) -> None:
    """An output file can be created or replaced: not a folder, and its folder takes a new file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file name")
    with _probe_folder(f"{what} {path}", path.parent):
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)


def check_writable_folder(what: str, folder: str | Path) -> None:
    """A folder in which leadtemp can create its working folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {folder} is a file; give a folder")
    with _probe_folder(f"{what} {folder}", folder):
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".leadtemp-probe."))


# -- a run's working folder -----------------------------------------------------------------------------

def owned(folder: Path, key: str) -> bool:
    """``folder`` was created by leadtemp for the run ``key``."""
    try:
        return (folder / WORK_MARKER).read_text().strip() == key
    except OSError:
        return False


class RunFolder:
    """A working folder leadtemp created for one run, locked by this process while it is open."""

    def __init__(self, path: Path, key: str, lock_fd: int):
        self.path, self.key, self._fd = path, key, lock_fd

    @classmethod
    def open(cls, base: Path, name: str, key: str, what: str = "leadtemp score") -> RunFolder:
        """The folder ``base/name`` for run ``key``: created with its marker, or the one a killed run left.

        Raises :class:`RunLocked` when another process holds it.
        """
        base = Path(base)
        path = base / name
        with storage_errors(f"working folder {path}"):
            base.mkdir(parents=True, exist_ok=True)
            for _ in range(5):
                if not path.exists():
                    # Made whole under a temporary name, then renamed: nobody sees it without its marker.
                    fresh = Path(tempfile.mkdtemp(dir=base, prefix=f".{name}."))
                    (fresh / WORK_MARKER).write_text(key + "\n")
                    try:
                        os.rename(fresh, path)
                    except OSError:  # another run made it first
                        shutil.rmtree(fresh, ignore_errors=True)
                if not owned(path, key):
                    raise ConfigError(f"{path} exists but is not a working folder leadtemp made for this run (no "
                                      f"{WORK_MARKER} with its key): leadtemp does not touch it; move it away or give "
                                      "another --work-dir")
                fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    if fcntl is not None:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise RunLocked(f"another {what} run with the same inputs and output is running (pid {pid}); "
                                    f"wait for it or stop it, then run the same command again to resume "
                                    f"(working folder {path})") from None
                try:  # the run that held the lock may have finished and removed the folder meanwhile
                    current = os.stat(path / LOCK_FILE).st_ino
                except FileNotFoundError:
                    current = None
                if current != os.fstat(fd).st_ino:
                    os.close(fd)
                    continue
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return cls(path, key, fd)
        raise StorageError(f"working folder {path}: could not be created and locked (it keeps disappearing)")

    def remove(self) -> None:
        """Delete the folder, which leadtemp made (its marker says so), then release the lock."""
        try:
            if owned(self.path, self.key):
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
