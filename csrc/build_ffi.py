"""cffi build script: compiles the C layer in ``csrc/`` against a system SUNDIALS.

SUNDIALS is looked up in ``$SUNDIALS_DIR``, then ``$CONDA_PREFIX``, then the standard
system prefixes. Its version may be 6.x or 7.x; ``sl_internal.h`` hides the differences.
KLU (``linear_solver="sparse"``) is optional: it is used when SUNDIALS has its KLU solver
and ``klu.h`` is found (in ``$KLU_INCLUDE_DIR``, or where distributions put it); without
it the extension still builds and ``linear_solver="sparse"`` raises an error saying so.
"""
import os
import pathlib
import sys

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
CDEF_HEADERS = ["sl_common.h", "sl_cvodes.h", "sl_arkode.h", "sl_auto.h", "sl_idas.h", "sl_pool.h",
                "sl_dae_yp.h"]
SOURCES = ["sl_internal.c", "sl_cvodes.c", "sl_arkode.c", "sl_auto.c", "sl_rk_adjoint.c", "sl_esdirk.c", "sl_linalg.c", "sl_schedule.c", "sl_events.c",
           "sl_nvector.c", "sl_dopri.c", "sl_idas.c",
           "sl_idas_adjoint.c", "sl_dae_yp.c", "sl_backend.c", "sl_pool.c"]
SUNDIALS_LIBRARIES = [
    "sundials_cvodes", "sundials_idas", "sundials_arkode", "sundials_nvecserial",
    "sundials_sunmatrixdense", "sundials_sunmatrixband", "sundials_sunmatrixsparse",
    "sundials_sunlinsoldense", "sundials_sunlinsolband", "sundials_sunlinsolspgmr",
]
HELP = (
    "sunode_like needs SUNDIALS (6.x or 7.x, with CVODES, IDAS and ARKODE; KLU optional) "
    "to build. Install it with `apt-get install libsundials-dev` (Debian/Ubuntu) or "
    "`conda install -c conda-forge sundials`, or set SUNDIALS_DIR to its install prefix."
)
KLU_HELP = (
    "linear_solver='sparse' is disabled: {reason}. To enable it, install SuiteSparse's KLU "
    "(`apt-get install libsuitesparse-dev`) and a SUNDIALS built with KLU, or set "
    "KLU_INCLUDE_DIR to the folder holding klu.h, then rebuild."
)


def find_sundials():
    """Return (prefix, include_dir, library_dir, is_system) of a SUNDIALS install."""
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
        if found:
            return prefix, include, found[0], is_system
    sys.exit("error: SUNDIALS not found. " + HELP)


def find_klu_include(prefix):
    """The folder holding klu.h, or None. ``$KLU_INCLUDE_DIR`` wins; then the SUNDIALS
    prefix, conda, and the system folders (Debian and conda put it in .../suitesparse)."""
    explicit = os.environ.get("KLU_INCLUDE_DIR")
    if explicit:
        if not (pathlib.Path(explicit) / "klu.h").exists():
            sys.exit(f"error: KLU_INCLUDE_DIR={explicit} has no klu.h.")
        return pathlib.Path(explicit)
    roots = [prefix, os.environ.get("CONDA_PREFIX"), "/usr", "/usr/local", "/opt/homebrew"]
    for root in filter(None, roots):
        for sub in ("include/suitesparse", "include"):
            folder = pathlib.Path(root) / sub
            if (folder / "klu.h").exists():
                return folder
    return None


def klu_config(prefix, library_dir):
    """(include_dirs, libraries, None) when KLU can be used, else ([], [], reason)."""
    if not list(library_dir.glob("libsundials_sunlinsolklu.*")):
        return [], [], f"this SUNDIALS ({library_dir}) was built without KLU"
    folder = find_klu_include(prefix)
    if folder is None:
        return [], [], "klu.h was not found"
    return [str(folder)], ["sundials_sunlinsolklu", "klu"], None


def cdef_source():
    # SL_HAVE_KLU tells Python whether linear_solver="sparse" is available; the version is
    # the one the extension was compiled against.
    return "\n".join((HERE / name).read_text() for name in CDEF_HEADERS) + (
        "\nstatic const int SL_HAVE_KLU;\nstatic const int SUNDIALS_VERSION_MAJOR;"
        "\nstatic const int SUNDIALS_VERSION_MINOR;\nstatic const int SUNDIALS_VERSION_PATCH;\n")


prefix, include, library_dir, is_system = find_sundials()
klu_includes, klu_libraries, klu_missing = klu_config(prefix, library_dir)
if klu_missing:
    print("warning: " + KLU_HELP.format(reason=klu_missing), file=sys.stderr)
extra = ["sundials_core"] if list(library_dir.glob("libsundials_core.*")) else []
ffibuilder = FFI()
ffibuilder.cdef(cdef_source())
ffibuilder.set_source(
    "sunode_like._sundials",
    "#include <stdint.h>\n#include <sundials/sundials_config.h>\n#include \"sl_common.h\"\n#include \"sl_cvodes.h\"\n#include \"sl_arkode.h\"\n#include \"sl_auto.h\"\n#include \"sl_idas.h\"\n#include \"sl_pool.h\"\n#include \"sl_dae_yp.h\"\n",
    # setuptools wants source paths relative to the project root.
    sources=[os.path.relpath(HERE / s) for s in SOURCES],
    include_dirs=[str(HERE), str(include)] + klu_includes,
    library_dirs=[str(library_dir)],
    runtime_library_dirs=[] if is_system else [str(library_dir)],
    libraries=SUNDIALS_LIBRARIES + klu_libraries + extra + ["m"],
    define_macros=[("SL_HAVE_KLU", "0" if klu_missing else "1")],
    extra_compile_args=["-O2", "-std=c99", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
