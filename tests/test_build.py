"""What the extension was built against: the SUNDIALS version, and KLU for linear_solver="sparse".

CI builds the extension three ways (system SUNDIALS 6.4, SUNDIALS 7.5, SUNDIALS 7.5 without
KLU) and sets ``SUNODE_LIKE_EXPECT_SUNDIALS`` / ``SUNODE_LIKE_EXPECT_KLU`` so that each run
checks it tests the build it means to.
"""
import os

import numpy as np
import pytest
import scipy.linalg

import sunode_like as sl
from sunode_like._sundials import lib

# A stiff linear system dy/dt = A y with a sparse A: y(t) = expm(A t) y0.
A = np.array([[-100.0, 1.0, 0.0], [0.0, -1.0, 2.0], [0.5, 0.0, -3.0]])
Y0 = np.array([1.0, 2.0, -1.0])
TVALS = np.array([0.1, 1.0, 3.0])


def linear_problem():
    def rhs(t, y, p):
        return {"y": [sum(A[i, j] * y.y[j] for j in range(3) if A[i, j]) for i in range(3)]}

    return sl.SympyProblem(params={"unused": ()}, states={"y": (3,)}, rhs_sympy=rhs,
                           derivative_params=[])


def test_built_against_the_expected_sundials():
    version = (lib.SUNDIALS_VERSION_MAJOR, lib.SUNDIALS_VERSION_MINOR, lib.SUNDIALS_VERSION_PATCH)
    assert version[0] in (6, 7), version
    expected = os.environ.get("SUNODE_LIKE_EXPECT_SUNDIALS")
    if expected:
        assert ".".join(map(str, version)).startswith(expected), (version, expected)
    expected_klu = os.environ.get("SUNODE_LIKE_EXPECT_KLU")
    if expected_klu:
        assert bool(lib.SL_HAVE_KLU) == (expected_klu == "1")


@pytest.mark.skipif(not lib.SL_HAVE_KLU, reason="built without KLU")
def test_sparse_solves_match_the_matrix_exponential():
    solver = sl.Solver(linear_problem(), linear_solver="sparse", rtol=1e-10, atol=1e-12)
    y = solver.make_output_buffers(TVALS)
    solver.solve(0.0, TVALS, Y0, y)
    expected = np.array([scipy.linalg.expm(A * t) @ Y0 for t in TVALS])
    np.testing.assert_allclose(y, expected, rtol=1e-7, atol=1e-10)


@pytest.mark.skipif(bool(lib.SL_HAVE_KLU), reason="built with KLU")
def test_without_klu_sparse_is_a_clear_error():
    problem = linear_problem()
    for make in (lambda: sl.Solver(problem, linear_solver="sparse"),
                 lambda: sl.AdjointSolver(problem, linear_solver_backward="sparse")):
        with pytest.raises(ValueError, match=r"linear_solver(_backward)?='sparse'.*needs KLU.*KLU_INCLUDE_DIR"):
            make()
    sl.Solver(problem, linear_solver="dense")  # everything else works
