"""Stiff problems of the Test Set for IVP Solvers (Mazzia & Magherini, Univ. Bari), with
their published reference solutions: ROBER (3 states), HIRES (8) and POLLU (20).

Each factory returns a `TestSetProblem`: the `SympyProblem` (rate constants as params, so
that gradients can be taken with respect to them), the test set's params, initial values
and output time, and the reference y at that time (flat layout). Tests check solvers against
the references; benchmarks use the same models.
"""
from typing import NamedTuple

import numpy as np

from .._problem import SympyProblem


class TestSetProblem(NamedTuple):
    problem: SympyProblem
    params: np.ndarray  # flat, in the problem's layout
    y0: np.ndarray
    t_end: float
    reference: np.ndarray  # y(t_end), computed there with RADAU5 at very tight tolerance


def _rober_rhs(t, y, p):
    return {"y1": -p.k1 * y.y1 + p.k3 * y.y2 * y.y3,
            "y2": p.k1 * y.y1 - p.k3 * y.y2 * y.y3 - p.k2 * y.y2**2,
            "y3": p.k2 * y.y2**2}


def rober():
    """Robertson's chemical kinetics, y(0) = (1, 0, 0), k = (0.04, 3e7, 1e4), t_end = 1e11."""
    problem = SympyProblem(params={"k1": (), "k2": (), "k3": ()},
                           states={"y1": (), "y2": (), "y3": ()}, rhs_sympy=_rober_rhs)
    reference = np.array([0.2083340149701255e-07, 0.8333360770334713e-13, 0.9999999791665050])
    return TestSetProblem(problem, np.array([0.04, 3e7, 1e4]), np.array([1.0, 0.0, 0.0]), 1e11,
                          reference)


_HIRES_K = [1.71, 0.43, 8.32, 0.0007, 8.75, 10.03, 0.035, 1.12, 1.745, 280.0, 0.69, 1.81]


def _hires_rhs(t, y, p):
    y1, y2, y3, y4, y5, y6, y7, y8 = y.y
    k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12 = p.k
    return {"y": [
        -k1 * y1 + k2 * y2 + k3 * y3 + k4,
        k1 * y1 - k5 * y2,
        -k6 * y3 + k2 * y4 + k7 * y5,
        k3 * y2 + k1 * y3 - k8 * y4,
        -k9 * y5 + k2 * y6 + k2 * y7,
        -k10 * y6 * y8 + k11 * y4 + k1 * y5 - k2 * y6 + k11 * y7,
        k10 * y6 * y8 - k12 * y7,
        -k10 * y6 * y8 + k12 * y7]}


def hires():
    """The 'High Irradiance RESponse' of plant physiology, t_end = 321.8122. The test set
    writes its 12 distinct rate constants as numbers; here they are the params ``k``."""
    problem = SympyProblem(params={"k": (12,)}, states={"y": (8,)}, rhs_sympy=_hires_rhs)
    reference = np.array([
        7.371312573325668e-4, 1.442485726316185e-4, 5.888729740967575e-5,
        1.175651343283149e-3, 2.386356198831331e-3, 6.238968252742796e-3,
        2.849998395185769e-3, 2.850001604814231e-3])
    y0 = np.array([1.0, 0, 0, 0, 0, 0, 0, 0.0057])
    return TestSetProblem(problem, np.array(_HIRES_K), y0, 321.8122, reference)


_POLLU_K = [0.35, 26.6, 1.23e4, 8.6e-4, 8.2e-4, 1.5e4, 1.3e-4, 2.4e4, 1.65e4, 9e3, 2.2e-2,
            1.2e4, 1.88, 1.63e4, 4.8e6, 3.5e-4, 1.75e-2, 1e8, 4.44e11, 1.24e3, 2.1, 5.78,
            4.74e-2, 1.78e3, 3.12]


def _pollu_rhs(t, y, p):
    y, k = [None] + list(y.y), [None] + list(p.k)  # 1-based, as in the test set
    r = [None, k[1] * y[1], k[2] * y[2] * y[4], k[3] * y[5] * y[2], k[4] * y[7], k[5] * y[7],
         k[6] * y[7] * y[6], k[7] * y[9], k[8] * y[9] * y[6], k[9] * y[11] * y[2],
         k[10] * y[11] * y[1], k[11] * y[13], k[12] * y[10] * y[2], k[13] * y[14],
         k[14] * y[1] * y[6], k[15] * y[3], k[16] * y[4], k[17] * y[4], k[18] * y[16],
         k[19] * y[16], k[20] * y[17] * y[6], k[21] * y[19], k[22] * y[19],
         k[23] * y[1] * y[4], k[24] * y[19] * y[1], k[25] * y[20]]
    dy = [-r[1] - r[10] - r[14] - r[23] - r[24] + r[2] + r[3] + r[9] + r[11] + r[12] + r[22] + r[25],
          -r[2] - r[3] - r[9] - r[12] + r[1] + r[21],
          -r[15] + r[1] + r[17] + r[19] + r[22],
          -r[2] - r[16] - r[17] - r[23] + r[15],
          -r[3] + 2 * r[4] + r[6] + r[7] + r[13] + r[20],
          -r[6] - r[8] - r[14] - r[20] + r[3] + 2 * r[18],
          -r[4] - r[5] - r[6] + r[13],
          r[4] + r[5] + r[6] + r[7],
          -r[7] - r[8],
          -r[12] + r[7] + r[9],
          -r[9] - r[10] + r[8] + r[11],
          r[9],
          -r[11] + r[10],
          -r[13] + r[12],
          r[14],
          -r[18] - r[19] + r[16],
          -r[20],
          r[20],
          -r[21] - r[22] - r[24] + r[23] + r[25],
          -r[25] + r[24]]
    return {"y": dy}


def pollu():
    """The air pollution model of Verwer (1994): 20 species, 25 reactions, t_end = 60."""
    problem = SympyProblem(params={"k": (25,)}, states={"y": (20,)}, rhs_sympy=_pollu_rhs)
    y0 = np.zeros(20)
    y0[[1, 3, 6, 7, 8, 16]] = [0.2, 0.04, 0.1, 0.3, 0.01, 0.007]
    reference = np.array([
        5.646255480022769e-2, 0.1342484130422339, 4.139734331099427e-9,
        5.523140207484359e-3, 2.018977262302196e-7, 1.464541863493966e-7,
        7.784249118997964e-2, 0.3245075353396018, 7.494013383880406e-3,
        1.622293157301561e-8, 1.135863833257075e-8, 2.230505975721359e-3,
        2.087162882798630e-4, 1.396921016840158e-5, 8.964884856898295e-3,
        4.352846369330103e-18, 6.899219696263405e-3, 1.007803037365946e-4,
        1.772146513969984e-6, 5.682943292316392e-5])
    return TestSetProblem(problem, np.array(_POLLU_K), y0, 60.0, reference)
