"""Writing files: the one way every output of ssd_fast reaches the disk.

- :func:`check_output`, before the work: the output can be created (a real file is created and
  removed, so a read-only mount, a full disk or a missing permission shows, for root too), it is
  not a directory, and it is none of the inputs (a symbolic or hard link to one included);
- :func:`write_atomically`: a checkpoint, a picture, an ONNX file or a JSON file is written whole
  or not at all, with the mode of any other output; :class:`LineLog` appends whole lines;
- :class:`OutputError`: a file that cannot be written, in one line naming it and why
  (``no space left on the device writing 'runs/x/model.pt'``); the file that was there is
  intact and no temporary is left behind;
- :func:`run_lock`: one run at a time writes into a folder.
"""
import contextlib
import errno
import fcntl
import io
import os
import re
import tempfile
from typing import Callable, Iterable, Optional, Tuple

#: The errors of writing that are the destination's, not the program's: they become OutputError.
_WHY = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "no space left on the device (quota)",
        errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted", errno.EFBIG: "file too large for the file system"}
LOCK_NAME = ".ssd_fast.lock"


class OutputError(OSError):
    """An output that cannot be written. ``str(e)`` is one line naming the file and why;
    ``errno`` is the system's error (ENOSPC, EROFS, EACCES, ...), ``path`` the file."""

    def __init__(self, message: str, code: Optional[int] = None, path: Optional[str] = None):
        super().__init__(message)
        self.errno, self.path = code, path

    def __str__(self):
        return self.args[0]


def _failure(error: OSError, path: str, preflight: bool = False) -> Optional[OutputError]:
    """``error`` as an OutputError if it is the destination's fault, else None."""
    why = _WHY.get(error.errno)
    if why is None:
        return None
    return OutputError(f"{path!r} cannot be written: {why}" if preflight else f"{why} writing {path!r}",
                       error.errno, path)


@contextlib.contextmanager
def writing(path):
    """Turn the destination's errors (full, read-only, no permission) raised inside the block
    into an :class:`OutputError` naming ``path``; other errors pass unchanged."""
    try:
        yield
    except OutputError:
        raise
    except OSError as e:
        failure = _failure(e, os.fspath(path))
        if failure is None:
            raise
        raise failure from e


def umask() -> int:
    """This process's umask. Linux shows it in /proc/self/status; elsewhere the only way to
    read it is to set it and set it back, which for that moment changes the mode of files that
    another thread creates, so that way is the fallback only."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _temporary(path: str) -> Tuple[int, str]:
    """A new file next to ``path`` named ``.NAME.PID.RANDOM.tmp``: the pid tells
    :func:`remove_stale_temporaries` whether its writer is gone."""
    folder = os.path.dirname(os.path.abspath(path))
    return tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp", dir=folder)


def remove_stale_temporaries(path) -> None:
    """Remove the temporary files of earlier writes of ``path`` whose writer is gone (a process
    killed in the middle of a write): their names hold the writer's pid. A live writer's file,
    and any other file, are left alone. Every write calls it, and a training run at its start."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return
    pattern = re.compile(rf"\.{re.escape(os.path.basename(path))}\.(\d+)\.\w+\.tmp")
    for name in os.listdir(folder):
        m = pattern.fullmatch(name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(folder, name))
            except FileNotFoundError:
                pass


class _Sink(io.RawIOBase):
    """The temporary file as a writer sees it: every byte through ``os.write`` here, the first
    error kept (``torch.save`` reports its writer's ENOSPC as an unrelated RuntimeError), no
    ``fileno`` (PIL would write to the descriptor itself and report only an encoder error)."""

    def __init__(self, fd: int):
        super().__init__()
        self.fd, self.error, self.failed = fd, None, False

    def writable(self):
        return True

    def seekable(self):
        return True

    def write(self, data):
        if self.failed:  # after a failure: the buffer's last flush goes nowhere
            return len(data)
        try:
            return os.write(self.fd, data)
        except OSError as e:
            self.error = self.error or e
            raise

    def seek(self, offset, whence=io.SEEK_SET):
        return os.lseek(self.fd, offset, whence)

    def tell(self):
        return os.lseek(self.fd, 0, io.SEEK_CUR)


def write_atomically(path, write: Callable) -> None:
    """``write(file)`` into a temporary file next to ``path`` (its folder created if missing),
    flushed to disk, then renamed over ``path``: an existing file is kept whole or replaced
    whole, never left half-written. ``file`` is a binary, buffered, seekable file object. The
    file gets the mode of any other output (0666 less the umask). Temporaries of earlier
    writers that were killed are removed first, and a failed write leaves none.

    Raises :class:`OutputError` ("no space left on the device writing 'PATH'", "read-only
    file system writing 'PATH'", ...) when the destination refuses the bytes; any error of
    ``write`` itself is raised as it is."""
    path = os.fspath(path)
    with writing(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = _temporary(path)
    sink = _Sink(fd)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        f = io.BufferedWriter(sink, 1 << 20)
        write(f)
        f.flush()
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException as e:
        sink.failed = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        cause = sink.error or (e if isinstance(e, OSError) else None)
        failure = None if cause is None else _failure(cause, path)
        if failure is None:
            raise
        raise failure from e
    finally:
        os.close(fd)


class LineLog:
    """``LineLog(path)``: a text file that lines are appended to (created with the mode of any
    output), each line whole or not at all: a line the disk has no room for is cut off again,
    and :class:`OutputError` says so."""

    def __init__(self, path):
        self.path = os.fspath(path)
        with writing(self.path):
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def write(self, line: str) -> None:
        """Append ``line`` (give it its newline)."""
        data = memoryview(line.encode())
        size = os.fstat(self.fd).st_size
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError:
            os.ftruncate(self.fd, size)
            with writing(self.path):
                raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _inside(path: str, folder: str) -> bool:
    return os.path.realpath(path).startswith(os.path.join(os.path.realpath(folder), ""))


def input_at(path, inputs: Iterable[Tuple[str, str]]) -> Optional[Tuple[str, str]]:
    """The ``(label, input)`` of ``inputs`` that writing ``path`` would overwrite: the same file
    (through a symbolic or a hard link too), or a folder input that ``path`` lies inside. None
    if there is none."""
    path = os.fspath(path)
    real = os.path.realpath(path)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    for label, other in inputs:
        other = os.fspath(other)
        if os.path.isdir(other):
            if _inside(path, other):
                return label, other
        elif real == os.path.realpath(other):
            return label, other
        elif st is not None:
            try:
                o = os.stat(other)
            except OSError:
                continue
            if (o.st_dev, o.st_ino) == (st.st_dev, st.st_ino):
                return label, other
    return None


def _existing_folder(path: str) -> str:
    """The folder ``path`` would go into, or its nearest ancestor that exists."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    return folder


def _probe(folder: str, path: str, output: str) -> None:
    """Create a temporary file of one block in ``folder`` and remove it again: whether a file can
    be written there, as the writer will write it (root passes permission bits, not a read-only
    mount; a full disk may still take an empty file, not a block). Named as ``path``'s
    temporaries, so one left by a killed process is removed as theirs are. The error names
    ``output``."""
    try:
        fd, name = _temporary(os.path.join(folder, os.path.basename(path)))
        try:
            os.write(fd, bytes(4096))
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as e:
        failure = _failure(e, output, preflight=True)
        if failure is None:
            raise
        raise failure from e


def check_output(path, inputs: Iterable[Tuple[str, str]] = (), folder: bool = False) -> None:
    """Check, before the work, that the output ``path`` can be written; :class:`OutputError`
    naming ``path`` and why otherwise, writing nothing. ``inputs``: ``(label, path)`` of what the
    command reads (label e.g. ``"the checkpoint"``); ``path`` may be none of them. ``folder``:
    ``path`` is a folder the outputs go into (made if missing), else a file."""
    path = os.fspath(path)
    inputs = list(inputs)
    if folder:
        if os.path.exists(path) and not os.path.isdir(path):
            raise OutputError(f"{path!r} is a file; give a folder", path=path)
    elif os.path.isdir(path):
        raise OutputError(f"{path!r} is a directory; give a file name", path=path)
    parent = path if folder and os.path.isdir(path) else _existing_folder(path)
    if not os.path.isdir(parent):
        raise OutputError(f"{path!r}: {parent!r} is a file, not a folder", path=path)
    hit = input_at(path, inputs)
    if hit is not None:
        label, other = hit
        where = f"lies inside {label}" if os.path.isdir(other) else f"is {label} itself"
        raise OutputError(f"{path!r} {where} ({other!r}); give another {'folder' if folder else 'file name'}",
                          path=path)
    _probe(parent, os.path.join(path, LOCK_NAME) if folder else path, path)


_HELD = {}  # (st_dev, st_ino) of a folder -> [lock file descriptor, holders in this process]


@contextlib.contextmanager
def run_lock(folder):
    """Hold ``folder`` (made if missing) for this process's run: :class:`OutputError` if another
    process holds it. The lock is an ``flock`` on ``FOLDER/.ssd_fast.lock``, which the kernel
    drops when the process ends, however it ends, so a killed run never leaves it stuck. Held
    again by the same process (the CLI, then its Trainer), it is the same lock."""
    folder = os.fspath(folder)
    lock = os.path.join(folder, LOCK_NAME)
    with writing(lock):
        os.makedirs(folder, exist_ok=True)
        st = os.stat(folder)
        key = (st.st_dev, st.st_ino)
        held = _HELD.get(key)
        if held is None:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                raise OutputError(f"{folder!r} is being written by another run"
                                  + (f" (pid {holder})" if holder.isdigit() else "")
                                  + "; wait for it to end or give another folder", path=folder) from None
            with contextlib.suppress(OSError):  # the holder's pid is for the message only
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            held = _HELD[key] = [fd, 0]
    held[1] += 1
    try:
        yield
    finally:
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            os.close(held[0])  # closing the last descriptor drops the flock
