"""Build and run ``lv_direct.c``: a Lotka-Volterra forward solve done by
calling SUNDIALS CVODES directly from C, the "peer" our library is timed
against (same problem, tolerances and solver settings as the benchmarks).
"""
import os
import pathlib
import subprocess

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE / "lv_direct.c"
BUILD_DIR = HERE / ".build"
LIBS = ["sundials_cvodes", "sundials_nvecserial",
        "sundials_sunlinsoldense", "sundials_sunmatrixdense", "m"]


def _sundials_prefix() -> pathlib.Path:
    """First of $SUNDIALS_DIR, $CONDA_PREFIX, /usr, /usr/local with cvodes headers."""
    candidates = [os.environ.get("SUNDIALS_DIR"), os.environ.get("CONDA_PREFIX"),
                  "/usr", "/usr/local"]
    for prefix in filter(None, candidates):
        if (pathlib.Path(prefix) / "include" / "cvodes" / "cvodes.h").is_file():
            return pathlib.Path(prefix)
    raise RuntimeError("SUNDIALS (cvodes/cvodes.h) not found; set SUNDIALS_DIR")


def build_direct_c() -> pathlib.Path:
    """Compile lv_direct.c with ``cc -O2`` into benchmarks/.build/ (cached
    until the source changes) and return the executable's path."""
    exe = BUILD_DIR / "lv_direct"
    if exe.is_file() and exe.stat().st_mtime >= SOURCE.stat().st_mtime:
        return exe
    prefix = _sundials_prefix()
    lib_dirs = [d for d in (prefix / "lib", prefix / "lib" / "x86_64-linux-gnu")
                if d.is_dir()]
    cmd = ["cc", "-O2", str(SOURCE), "-o", str(exe), f"-I{prefix / 'include'}"]
    cmd += [f"-L{d}" for d in lib_dirs] + [f"-Wl,-rpath,{d}" for d in lib_dirs]
    cmd += [f"-l{lib}" for lib in LIBS]
    BUILD_DIR.mkdir(exist_ok=True)
    subprocess.run(cmd, check=True)
    return exe


def time_direct_c(n_reps: int = 2000) -> tuple[float, np.ndarray]:
    """Microseconds per solve (median of 7 batches of n_reps // 7 solves,
    CVODES memory reused via CVodeReInit) and the state at t=20."""
    out = subprocess.run([str(build_direct_c()), str(n_reps)], check=True,
                         capture_output=True, text=True).stdout
    fields = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    us_per_solve = float(fields["direct_c_us_per_solve"][0])
    final_state = np.array([float(x) for x in fields["final_state"]])
    return us_per_solve, final_state
