"""Failure counts shared by every process that runs a copy of one Op.

PyMC's multiprocess sampling (``pm.sample(cores=2)``) runs the Ops in worker processes,
forked or spawned (and then unpickled), so failed solves there would be counted only there.
Each Op's count is an int64 in an 8-byte file that every process holding a copy maps: the
process that first builds the Op creates the file (in a temporary folder it removes when it
exits), pickles of the Op carry its path, forked children inherit the mapping, and the C pool
adds to it atomically. ``op.n_failures`` reads it, after sampling too.
"""
import atexit
import mmap
import os
import shutil
import tempfile

from .._sundials import ffi, lib

_COUNTS = {}  # key -> SharedCount, in this process
_FOLDER = []  # the temporary folder of this process's files, once made


class SharedCount:
    """An int64 counter in the file at ``path``, mapped into this process."""

    def __init__(self, path):
        self.path = path
        with open(path, "r+b") as file:
            self._map = mmap.mmap(file.fileno(), 8)
        self._buffer = ffi.from_buffer(self._map)
        self.pointer = ffi.cast("int64_t *", self._buffer)

    @property
    def value(self):
        return int(self.pointer[0])

    def add(self, n=1):
        lib.sl_counter_add(self.pointer, n)


def shared_count(key, path=None):
    """The count of the Op with ``key``: the one in the file at ``path`` (from a pickle of
    the Op) when given, else this process's (created on first use)."""
    count = _COUNTS.get(key)
    if path is not None and (count is None or count.path != path) and os.path.exists(path):
        count = _COUNTS[key] = SharedCount(path)
    if count is None:
        count = _COUNTS[key] = SharedCount(_new_file())
    return count


def _new_file():
    if not _FOLDER:
        _FOLDER.append(tempfile.mkdtemp(prefix="sunode_like-failures-"))
        owner = os.getpid()
        # Forked children inherit this handler; only the creating process removes the folder.
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(_FOLDER[0], ignore_errors=True))
    descriptor, path = tempfile.mkstemp(dir=_FOLDER[0], suffix=".count")
    os.write(descriptor, bytes(8))
    os.close(descriptor)
    return path
