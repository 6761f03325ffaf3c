"""cffi build script: compiles the C layer in ``csrc/`` against a system SUNDIALS.

SUNDIALS is looked up in ``$SUNDIALS_DIR``, then ``$CONDA_PREFIX``, then the standard
system prefixes. Its version may be 6.x or 7.x; ``sl_internal.h`` hides the differences.
"""
import os
import pathlib
import sys

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
CDEF_HEADERS = ["sl_common.h", "sl_cvodes.h", "sl_idas.h", "sl_pool.h"]
SOURCES = ["sl_internal.c", "sl_cvodes.c", "sl_rk_adjoint.c", "sl_idas.c", "sl_pool.c"]
SUNDIALS_LIBRARIES = [
    "sundials_cvodes", "sundials_idas", "sundials_arkode", "sundials_nvecserial",
    "sundials_sunmatrixdense", "sundials_sunmatrixband", "sundials_sunmatrixsparse",
    "sundials_sunlinsoldense", "sundials_sunlinsolband", "sundials_sunlinsolklu",
    "sundials_sunlinsolspgmr",
]
HELP = (
    "sunode_like needs SUNDIALS (6.x or 7.x, with CVODES, IDAS, ARKODE and KLU) to build. "
    "Install it with `apt-get install libsundials-dev` (Debian/Ubuntu) or "
    "`conda install -c conda-forge sundials`, or set SUNDIALS_DIR to its install prefix."
)


def find_sundials():
    """Return (include_dirs, library_dirs, extra_libraries, is_system) of a SUNDIALS install."""
    env_prefixes = [os.environ.get(v) for v in ("SUNDIALS_DIR", "CONDA_PREFIX")]
    candidates = [(p, False) for p in env_prefixes if p] + [("/usr", True), ("/usr/local", True)]
    for prefix, is_system in candidates:
        prefix = pathlib.Path(prefix)
        include = prefix / "include"
        if not (include / "cvodes" / "cvodes.h").exists():
            continue
        lib_dirs = [d for d in (prefix / "lib", prefix / "lib64", prefix / "lib" / "x86_64-linux-gnu",
                                prefix / "lib" / "aarch64-linux-gnu") if d.is_dir()]
        found = [d for d in lib_dirs if list(d.glob("libsundials_cvodes.*"))]
        if not found:
            continue
        extra = ["sundials_core"] if list(found[0].glob("libsundials_core.*")) else []
        includes = [str(include)] + [str(d) for d in (include / "suitesparse",) if d.is_dir()]
        return includes, [str(found[0])], extra, is_system
    sys.exit("error: SUNDIALS not found. " + HELP)


def cdef_source():
    return "\n".join((HERE / name).read_text() for name in CDEF_HEADERS)


includes, lib_dirs, extra_libs, is_system = find_sundials()
ffibuilder = FFI()
ffibuilder.cdef(cdef_source())
ffibuilder.set_source(
    "sunode_like._sundials",
    "#include <stdint.h>\n#include \"sl_common.h\"\n#include \"sl_cvodes.h\"\n#include \"sl_idas.h\"\n#include \"sl_pool.h\"\n",
    # setuptools wants source paths relative to the project root.
    sources=[os.path.relpath(HERE / s) for s in SOURCES],
    include_dirs=[str(HERE)] + includes,
    library_dirs=lib_dirs,
    runtime_library_dirs=[] if is_system else lib_dirs,
    libraries=SUNDIALS_LIBRARIES + extra_libs + ["klu", "m"],
    extra_compile_args=["-O2", "-std=c99", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
