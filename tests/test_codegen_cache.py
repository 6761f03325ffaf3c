"""The generated module and numba's machine code are cached on disk: a second process that
builds the same model neither regenerates the module nor recompiles the kernels."""
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

# Builds a model, solves it and reports what the cache did. With "warm", generating the
# module source is forbidden, so reaching the solve proves the module came from disk.
SCRIPT = r"""
import json, sys, time
start = time.perf_counter()
import numpy as np, sympy
import sunode_like as sl
from sunode_like import _codegen
imported = time.perf_counter()
if sys.argv[1] == "warm":
    def forbidden(problem):
        raise AssertionError("the model's module was regenerated")
    _codegen._module_source = forbidden
problem = sl.SympyProblem(
    params={"k": (2,)}, states={"x": (), "y": ()},
    rhs_sympy=lambda t, y, p: {"x": -p.k[0] * y.x + sympy.sin(t) * y.y,
                               "y": p.k[0] * y.x - p.k[1] * y.y ** 2 + sympy.Rational(3, 7)})
solver = sl.Solver(problem, rtol=1e-10, atol=1e-10)
solver.set_params_dict({"k": [0.5, 0.25]})
tvals = np.linspace(0.0, 2.0, 5)
y = solver.make_output_buffers(tvals)
solver.solve(0.0, tvals, np.array([1.0, 0.5]), y)
done = time.perf_counter()
model = _codegen.compile_model(problem)
print(json.dumps({
    "import_s": imported - start, "build_and_solve_s": done - imported,
    "module": model.__file__, "y": y.tolist(),
    "cfunc_cache_hits": {name: getattr(model, name + "_cfunc").cache_hits
                         for name in ("rhs", "jac", "dfdp")},
}))
"""


def _run(cache_dir, mode):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}  # numba's own
    env["SUNODE_LIKE_CACHE_DIR"] = str(cache_dir)  # location would move the index files
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True,
                         text=True, timeout=600)
    wall = time.perf_counter() - start
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


def _mtimes(paths):
    return {p: p.stat().st_mtime_ns for p in paths}


def test_second_process_reuses_module_and_machine_code(tmp_path):
    cold, cold_wall = _run(tmp_path, "cold")
    module = pathlib.Path(cold["module"])
    assert module.parent == tmp_path and module.exists()
    assert cold["cfunc_cache_hits"] == {"rhs": 0, "jac": 0, "dfdp": 0}
    index_files = {name: sorted((tmp_path / "__pycache__").glob(f"{module.stem}.{name}_cfunc-*.nbi"))
                   for name in ("rhs", "jac", "dfdp")}
    assert all(len(files) == 1 for files in index_files.values()), index_files
    cached = [module, *(tmp_path / "__pycache__").glob(f"{module.stem}.*")]
    before = _mtimes(cached)

    warm, warm_wall = _run(tmp_path, "warm")
    assert warm["module"] == cold["module"]
    # Every kernel's machine code came from numba's cache; nothing was written again.
    assert warm["cfunc_cache_hits"] == {"rhs": 1, "jac": 1, "dfdp": 1}
    assert _mtimes(cached) == before
    assert sorted((tmp_path / "__pycache__").iterdir()) == sorted(cached[1:])
    np.testing.assert_array_equal(warm["y"], cold["y"])

    print(f"\ncold process: import {cold['import_s']:.2f} s, build+solve "
          f"{cold['build_and_solve_s']:.2f} s, wall {cold_wall:.2f} s"
          f"\nwarm process: import {warm['import_s']:.2f} s, build+solve "
          f"{warm['build_and_solve_s']:.2f} s, wall {warm_wall:.2f} s")
