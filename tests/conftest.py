"""Shared pytest setup.

The default cache dir ($SUNODE_LIKE_CACHE_DIR or ~/.cache/sunode_like) is left alone on
purpose, so compiled kernels are reused across test runs; tests that need an empty cache
set the variable in a subprocess only (see test_codegen_cache.py).
"""
import ctypes
import os
import sys

import pytest

# `import helpers` works whatever pytest's import mode.
sys.path.insert(0, os.path.dirname(__file__))


def rss_bytes():
    """Resident set size of this process, from /proc/self/statm (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _malloc_in_use_fn():
    try:
        libc = ctypes.CDLL(None)
        mallinfo2 = libc.mallinfo2  # glibc >= 2.33
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _Mallinfo2

    def malloc_in_use():
        """Bytes malloc has handed out and not had back (heap + mmapped blocks)."""
        info = mallinfo2()
        return info.uordblks + info.hblkhd

    return malloc_in_use


malloc_in_use = _malloc_in_use_fn()


@pytest.fixture
def memory():
    """A callable returning (rss_bytes, malloc_in_use_bytes or None).

    RSS alone misses leaks that fit in memory malloc freed earlier and kept (freed blocks
    are reused, not returned to the OS); glibc's count of bytes in use sees every
    allocation made by SUNDIALS and the C layer, so tests check both when they can.
    """
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc/self/statm (Linux)")
    return lambda: (rss_bytes(), malloc_in_use() if malloc_in_use else None)
