"""The generated module and numba's machine code are cached on disk: a second process that
builds the same model neither regenerates the module nor recompiles the kernels."""
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import warnings

import numba
import numpy as np
import pytest

import sunode_like as sl
from sunode_like import _codegen, _kernel_cache

# Builds a model, solves it (argv[2]: "forward" a Solver, "adjoint" also an AdjointSolver
# gradient and its central differences) and reports what the cache did. With "warm",
# generating the module source is forbidden, so reaching the solve proves the module came
# from disk.
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
k, y0, tvals = np.array([0.5, 0.25]), np.array([1.0, 0.5]), np.linspace(0.0, 2.0, 5)

def solve(k):
    solver = sl.Solver(problem, rtol=1e-10, atol=1e-10)
    solver.set_params_dict({"k": k})
    y = solver.make_output_buffers(tvals)
    solver.solve(0.0, tvals, y0, y)
    return y

y = solve(k)
done = time.perf_counter()
result = {"import_s": imported - start, "build_and_solve_s": done - imported, "y": y.tolist()}
if sys.argv[2] == "adjoint":  # L = sum of all outputs
    adj = sl.AdjointSolver(problem, rtol=1e-10, atol=1e-10)
    adj.set_params_dict({"k": k})
    ya, grad, lam = adj.make_output_buffers(tvals)
    adj.solve_forward(0.0, tvals, y0, ya)
    adj.solve_backward(tvals[-1], 0.0, tvals, np.ones_like(ya), grad, lam)
    result["grad"] = grad.tolist()
    result["fd"] = [(solve(k + step).sum() - solve(k - step).sum()) / 2e-5 for step in np.eye(2) * 1e-5]
model = _codegen.compile_model(problem, kernels=())
result["module"] = model.__file__
result["cfunc_cache_hits"] = {name: vars(model)[name + "_cfunc"].cache_hits
                              for name in model.KERNELS if name + "_cfunc" in vars(model)}
print(json.dumps(result))
"""


def _run(cache_dir, mode, solvers):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}  # numba's own
    env["SUNODE_LIKE_CACHE_DIR"] = str(cache_dir)  # location would move the index files
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode, solvers], env=env, capture_output=True,
                         text=True, timeout=600)
    wall = time.perf_counter() - start
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


def _mtimes(paths):
    return {p: p.stat().st_mtime_ns for p in paths}


def _index_files(cache_dir, module):
    return {name: sorted((cache_dir / "__pycache__").glob(f"{module.stem}.{name}_function-*.nbi"))
            for name in ("rhs", "jac", "dfdp")}


def test_second_process_reuses_module_and_machine_code(tmp_path):
    # A forward solve compiles only the kernels it calls ...
    cold, cold_wall = _run(tmp_path, "cold", "forward")
    module = pathlib.Path(cold["module"])
    assert module.parent == tmp_path and module.exists()
    assert cold["cfunc_cache_hits"] == {"rhs": 0, "jac": 0}
    assert {name: len(files) for name, files in _index_files(tmp_path, module).items()} == \
        {"rhs": 1, "jac": 1, "dfdp": 0}

    # ... the adjoint in the next process loads those and compiles df/dp from the cached
    # module, which holds every kernel's source.
    warm, _ = _run(tmp_path, "warm", "adjoint")
    assert warm["cfunc_cache_hits"] == {"rhs": 1, "jac": 1, "dfdp": 0}
    np.testing.assert_allclose(warm["grad"], warm["fd"], rtol=1e-6)
    np.testing.assert_array_equal(warm["y"], cold["y"])
    assert all(len(files) == 1 for files in _index_files(tmp_path, module).values())
    manifest = json.loads(module.with_suffix(".json").read_text())
    assert sorted(manifest["files"]) == sorted(f.name for f in (tmp_path / "__pycache__").glob(f"{module.stem}.*"))
    cached = [module, *(tmp_path / "__pycache__").glob(f"{module.stem}.*")]
    before = _mtimes(cached)

    # Every kernel's machine code comes from numba's cache now; nothing is written again.
    again, again_wall = _run(tmp_path, "warm", "adjoint")
    assert again["cfunc_cache_hits"] == {"rhs": 1, "jac": 1, "dfdp": 1}
    assert again["grad"] == warm["grad"]
    assert _mtimes(cached) == before
    assert sorted((tmp_path / "__pycache__").iterdir()) == sorted(cached[1:])

    print(f"\ncold process: import {cold['import_s']:.2f} s, build+solve "
          f"{cold['build_and_solve_s']:.2f} s, wall {cold_wall:.2f} s"
          f"\nwarm process: import {again['import_s']:.2f} s, build+solve "
          f"{again['build_and_solve_s']:.2f} s, wall {again_wall:.2f} s")


# -- damaged, edited and unwritable cache entries (issue 10, item 7) ----------------------
def _small_problem():
    return sl.SympyProblem(params={"a": (), "b": ()}, states={"x": ()},
                           rhs_sympy=lambda t, y, p: {"x": -p.a * y.x + p.b})


def _fresh_build(problem):
    """The model built as a new process would: nothing reused from memory."""
    _codegen._loaded.clear()
    model = _codegen.compile_model(problem)
    out = np.empty(1)
    model.rhs(0.0, np.array([2.0]), np.array([3.0, 0.5]), out)
    assert out[0] == -3.0 * 2.0 + 0.5
    return model


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SUNODE_LIKE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(_codegen, "_loaded", {})
    return tmp_path / "cache"


def _expect_rebuild_warning(problem, path):
    with pytest.warns(RuntimeWarning, match=str(path).replace(".", r"\.")):
        model = _fresh_build(problem)
    assert model.rhs_cfunc.cache_hits == 0  # compiled again, not loaded
    return model


@pytest.mark.parametrize("damage", ["truncated", "edited"])
def test_damaged_or_edited_module_is_rebuilt_and_named(cache, damage):
    problem = _small_problem()
    module = pathlib.Path(_fresh_build(problem).__file__)
    text = module.read_text()
    assert "-p_0*y_0" in text.replace(" ", "")
    if damage == "truncated":
        module.write_text(text[:len(text) // 2])
    else:  # still valid Python, with a different model in it
        module.write_text(text.replace("p[0]", "p[1]"))
    _expect_rebuild_warning(problem, module)
    assert module.read_text() == text
    # Repaired: the next build loads everything without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _fresh_build(problem).rhs_cfunc.cache_hits == 1


@pytest.mark.parametrize("which", ["nbi", "nbc"])
@pytest.mark.parametrize("manifest", [True, False])
def test_junk_numba_cache_file_is_recompiled_and_named(cache, which, manifest):
    problem = _small_problem()
    module = pathlib.Path(_fresh_build(problem).__file__)
    victim = sorted((cache / "__pycache__").glob(f"{module.stem}.rhs_function-*.{which}"))[0]
    victim.write_bytes(b"\x80\x04junk" + victim.read_bytes()[:7])
    if not manifest:  # no checksums recorded: numba's failure to read it is caught instead
        module.with_suffix(".json").unlink()
    _expect_rebuild_warning(problem, victim.name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _fresh_build(problem).rhs_cfunc.cache_hits == 1


def test_compile_error_of_a_later_kernel_is_not_blamed_on_the_cache(cache):
    # rhs and jac are cached; df/dp has no cache files yet, so a failure compiling it is
    # the compiler's, to be raised as it is, and the other kernels' files stay.
    model = _fresh_build(_small_problem())
    before = sorted((cache / "__pycache__").iterdir())
    assert before and "dfdp_cfunc" not in vars(model)
    model.dfdp_function = lambda t, y, p, out: object()  # not compilable by numba
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(numba.core.errors.TypingError):
            model.dfdp_cfunc
    assert sorted((cache / "__pycache__").iterdir()) == before


@pytest.mark.parametrize("how", ["not a directory", "read-only"])
def test_unwritable_cache_dir_falls_back_to_a_private_one(monkeypatch, tmp_path, how):
    if how == "not a directory":
        (tmp_path / "file").write_text("")
        requested = tmp_path / "file" / "cache"
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write into a read-only directory")
        requested = tmp_path / "ro"
        requested.mkdir()
        requested.chmod(0o555)
    monkeypatch.setenv("SUNODE_LIKE_CACHE_DIR", str(requested))
    monkeypatch.setattr(_kernel_cache, "_fallbacks", {})
    with pytest.warns(RuntimeWarning, match="cannot be written.*SUNODE_LIKE_CACHE_DIR"):
        model = _fresh_build(_small_problem())
    used = pathlib.Path(model.__file__).parent
    assert used != requested and used.is_relative_to(tempfile.gettempdir())
    with warnings.catch_warnings():  # warned once per process
        warnings.simplefilter("error")
        assert _kernel_cache.cache_dir() == used
