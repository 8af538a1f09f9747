"""Destinations that refuse what is written to them: a read-only file system, a full one, or a
folder that another process holds (``hold``).

``Destination(folder, kind, room)``: ``folder`` is made a file system of its own, where the
test may put files first; ``seal()`` then makes it read-only (``kind="read-only"``) or leaves
it ``room`` bytes free (``kind="full"``). Where this process may mount (root with
CAP_SYS_ADMIN) it is a real tmpfs (``how == "mounted"``); elsewhere the errors are injected
(``how == "injected"``): ``os.open``, ``os.mkdir``, ``os.replace``, ``os.rename``,
``builtins.open`` and ``os.write`` raise EROFS, or ``os.write`` ENOSPC past ``room`` bytes,
for paths under ``folder``; ``SSD_FAST_DESTINATIONS=injected`` in the environment chooses that
way where mounting works too. ``close()`` unmounts (lazily if the mount is busy) or undoes the
injection.
"""
import builtins
import errno
import functools
import os
import pathlib
import signal
import subprocess
import sys
import tempfile


def _run(*argv) -> bool:
    return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False).returncode == 0


@functools.cache
def can_mount() -> bool:
    """Whether this process can mount a tmpfs (and remount it read-only)."""
    with tempfile.TemporaryDirectory() as d:
        if not _run("mount", "-t", "tmpfs", "-o", "size=64k", "ssd_fast_probe", d):
            return False
        try:
            return _run("mount", "-o", "remount,ro", d)
        finally:
            _run("umount", d) or _run("umount", "-l", d)


FILLER = ".filler"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class Destination:
    def __init__(self, folder, kind, room=0, size="2m", how=None):
        assert kind in ("read-only", "full"), kind
        self.folder, self.kind, self.room = os.path.abspath(os.fspath(folder)), kind, room
        self.how = how or os.environ.get("SSD_FAST_DESTINATIONS") or ("mounted" if can_mount() else "injected")
        self.sealed, self._saved = False, {}
        os.makedirs(self.folder, exist_ok=True)
        if self.how == "mounted":
            assert _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "ssd_fast_test", self.folder)

    def __truediv__(self, name):
        return pathlib.Path(self.folder, name)

    def listing(self):
        """The names in ``folder``, less the filler that ``seal`` may have written."""
        return sorted(set(os.listdir(self.folder)) - {FILLER})

    def _under(self, path) -> bool:
        if isinstance(path, int):
            try:
                path = os.readlink(f"/proc/self/fd/{path}")
            except OSError:
                return False
        real = os.path.realpath(os.fspath(path))
        return real == self.folder or real.startswith(self.folder + os.sep)

    def seal(self):
        self.sealed = True
        if self.how == "mounted":
            if self.kind == "read-only":
                assert _run("mount", "-o", "remount,ro", self.folder)
            else:
                self._fill()
        else:
            self._inject()
        return self

    def _fill(self):
        """Take all the space but ``room`` bytes (tmpfs counts whole pages)."""
        st = os.statvfs(self.folder)
        left = st.f_bavail * st.f_frsize - self.room
        fd = os.open(os.path.join(self.folder, FILLER), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            while left > 0 or self.room == 0:
                n = os.write(fd, bytes(min(left, 1 << 16) if left > 0 else 4096))
                left -= n
        except OSError as e:
            assert e.errno == errno.ENOSPC and self.room == 0, e
        finally:
            os.close(fd)

    def _inject(self):
        real = {name: getattr(os, name) for name in ("open", "mkdir", "replace", "rename", "write")}
        self._saved = dict(real, builtin_open=builtins.open)
        refuse = self.kind == "read-only"
        room = [self.room]

        def erofs(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

        def fake_open(path, flags, mode=0o777, *, dir_fd=None):
            if refuse and flags & _WRITE_FLAGS and self._under(path):
                erofs(path)
            return real["open"](path, flags, mode, dir_fd=dir_fd)

        def fake_mkdir(path, mode=0o777, *, dir_fd=None):
            if refuse and self._under(path):
                erofs(path)
            return real["mkdir"](path, mode, dir_fd=dir_fd)

        def moving(name):
            def move(src, dst, **kw):
                if refuse and (self._under(src) or self._under(dst)):
                    erofs(dst)
                return real[name](src, dst, **kw)
            return move

        def fake_write(fd, data):
            if not self._under(fd):
                return real["write"](fd, data)
            if refuse:
                erofs(fd)
            if room[0] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = real["write"](fd, memoryview(data)[:room[0]])
            room[0] -= n
            return n

        def fake_builtin_open(file, mode="r", *args, **kwargs):
            if refuse and not isinstance(file, int) and set(mode) & set("wax+") and self._under(file):
                erofs(file)
            return self._saved["builtin_open"](file, mode, *args, **kwargs)

        os.open, os.mkdir, os.write = fake_open, fake_mkdir, fake_write
        os.replace, os.rename = moving("replace"), moving("rename")
        builtins.open = fake_builtin_open

    def unseal(self):
        """Writable again (for the test to look and clean up)."""
        if not self.sealed:
            return
        self.sealed = False
        if self.how == "mounted":
            if self.kind == "read-only":
                assert _run("mount", "-o", "remount,rw", self.folder)
        else:
            for name, value in self._saved.items():
                if name == "builtin_open":
                    builtins.open = value
                else:
                    setattr(os, name, value)
            self._saved = {}

    def close(self):
        self.unseal()
        if self.how == "mounted":
            _run("umount", self.folder) or _run("umount", "-l", self.folder)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_HOLDER = ("import sys, time\n"
           "from ssd_fast.outputs import run_lock\n"
           "with run_lock(sys.argv[1]):\n"
           "    print('held', flush=True)\n"
           "    time.sleep(300)\n")


def hold(folder):
    """A child process holding ``folder``'s run lock (it says so before this returns); end it
    with ``kill``."""
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, os.fspath(folder)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "held\n"
    return child


def kill(child):
    """SIGKILL ``child``, as a run killed in the middle."""
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
