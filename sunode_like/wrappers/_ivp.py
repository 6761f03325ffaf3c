"""What `solve_ivp` and `solve_dae_ivp` share: nested dicts of inputs as flat tensors, the
`Solve` Op applied to them, and its output as a nested dict of tensors."""
import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Constant, Variable

from .._validate import real_array
from ._ops import Solve, float64


class SolveIvpResult(tuple):
    """What `solve_ivp` returns. It unpacks like sunode's tuple:
    ``(y_hat, flat, problem, solver, y0_flat, params_flat)`` with adjoint derivatives, and
    ``(y_hat, flat, problem, solver, y0_flat, params_flat, sens, op)`` with forward ones.
    Each value is also an attribute, as are ``op`` (the `SolveODE` Op) and ``n_failures``
    (its count of failed solves, worker processes of a sampler included).

    ``y_hat``: nested dict of tensors ``(n_t, *shape)`` like ``y0``; ``flat``: tensor
    ``(n_t, n_states)``; ``problem``: the `SympyProblem`; ``solver``: an `AdjointSolver`
    (adjoint) or `Solver` (forward) with the same options; ``y0_flat``: tensor
    ``(n_states,)``; ``params_flat``: tensor ``(n_params,)`` of all params; ``sens``: tensor
    ``(n_t, n_dparams + n_states, n_states)`` of d y(tvals[i]) / d(derivative params, y0),
    or None with adjoint derivatives.
    """

    def __new__(cls, y_hat, flat, problem, solver, y0_flat, params_flat, *, op, sens=None):
        values = (y_hat, flat, problem, solver, y0_flat, params_flat)
        self = super().__new__(cls, values if sens is None else values + (sens, op))
        self.op, self.sens = op, sens
        return self

    y_hat = property(lambda self: self[0])
    flat = property(lambda self: self[1])
    problem = property(lambda self: self[2])
    solver = property(lambda self: self[3])
    y0_flat = property(lambda self: self[4])
    params_flat = property(lambda self: self[5])

    @property
    def n_failures(self):
        """``op.n_failures``."""
        return self.op.n_failures


def is_symbolic(value):
    return isinstance(value, Variable) and not isinstance(value, Constant)


class Inputs:
    """The ``y0`` and ``params`` dicts of a solve_*ivp call, split into shapes (``*_spec``,
    for the problem) and leaves (values), and the paths of the params to differentiate."""

    def __init__(self, y0, params, derivatives, derivative_subset):
        if derivatives not in ("adjoint", "forward"):
            raise ValueError(f"`derivatives={derivatives!r}` is not supported; expected 'adjoint' or 'forward'.")
        self.mode = "adjoint" if derivatives == "adjoint" else "sens"
        self.state_spec, self.state_leaves = _split(y0, "y0")
        self.param_spec, self.param_leaves = _split(params, "params")
        if derivative_subset is None:
            derivative_subset = [path for path, value in self.param_leaves if is_symbolic(value)]
        self.derivative_subset = derivative_subset


def solve_graph(result_type, problem, inputs, y0_flat, tvals, t0, solver_kwargs, doses=None):
    """``result_type`` of the `Solve` Op of ``problem`` applied to the flat inputs (and to
    ``doses``, a `Doses`, if given)."""
    params_flat = flat_input(problem.params, inputs.param_leaves, "params")
    dose_states, dose_inputs = dose_tensors(problem, doses, tvals, t0)
    op = Solve(problem, solver_kwargs, inputs.mode, dose_states)
    outputs = op(y0_flat, params_flat, tvals, t0, *dose_inputs)
    flat, sens = (outputs, None) if op.mode == "adjoint" else outputs[:2]
    return result_type(_states_as_dict(problem, flat), flat, problem, op.ensure_pool().solver,
                       y0_flat, params_flat, op=op, sens=sens)


def dose_tensors(problem, doses, tvals, t0):
    """The Op's dose inputs: (flat state indices, [time, amount, rate] as float64 vectors of
    one length), or ((), []) without doses. Numeric doses with numeric times are checked here
    (ValueError naming the entry); symbolic ones in C, where a bad value makes the outputs NaN."""
    if doses is None:
        return (), []
    states = doses.state_indices(problem)
    values = [doses.time, doses.amount, doses.rate]
    if not any(map(is_symbolic, values + [tvals, t0])):
        values = doses.values(problem, float(real_array("t0", _value(t0))),
                              real_array("tvals", _value(tvals)))[:3]
    vectors = [pt.broadcast_to(float64(pt.as_tensor_variable(value)), (len(states),)) for value in values]
    return tuple(int(i) for i in states), vectors


def _value(x):
    return x.data if isinstance(x, Constant) else x


def _split(tree, what, prefix=()):
    """Nested dict of values -> (spec of shapes, list of (path, value, shape))."""
    if not isinstance(tree, dict):
        raise TypeError(f"`{what}` must be a dict; got {type(tree).__name__}.")
    spec, leaves = {}, []
    for name, entry in tree.items():
        path = prefix + (name,)
        if isinstance(entry, dict):
            spec[name], sub = _split(entry, what, path)
            leaves += sub
            continue
        if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], (tuple, list, int, str)):
            value, shape = entry
        else:
            value, shape = entry, None
        if shape is None:
            shape = _static_shape(value, f"{what}[{'.'.join(path)!r}]")
        spec[name] = shape
        leaves.append((path, value))
    return spec, leaves


def _static_shape(value, where):
    if isinstance(value, Variable):
        shape = value.type.shape
        if any(s is None for s in shape):
            raise TypeError(f"{where} has static shape {shape} with unknown entries; pass "
                            f"`(value, shape)` to state its shape.")
        return tuple(shape)
    return np.shape(value)


def flat_input(layout, leaves, what):
    """The values of ``leaves`` (in ``layout``'s order) as one flat float64 tensor."""
    parts = []
    for (path, value), leaf in zip(leaves, layout.leaves):
        if is_symbolic(value):
            tensor = float64(pt.as_tensor_variable(value))
            if len(tensor.type.shape) != len(leaf.shape) or any(
                    s not in (None, e) for s, e in zip(tensor.type.shape, leaf.shape)):
                raise ValueError(f"`{what}[{leaf.name!r}]` has static shape {tensor.type.shape}; "
                                 f"expected {leaf.shape}.")
            parts.append(pt.reshape(tensor, (leaf.size,)))
        else:
            array = real_array(f"{what}[{leaf.name!r}]", value.data if isinstance(value, Constant) else value)
            if array.shape != leaf.shape:
                raise ValueError(f"`{what}[{leaf.name!r}]` has shape {array.shape}; expected {leaf.shape}.")
            parts.append(pt.constant(array.ravel()))
    if not parts:
        return pt.constant(np.zeros(0))
    return parts[0] if len(parts) == 1 else pt.concatenate(parts)


def _states_as_dict(problem, flat):
    """The (n_t, n_states) tensor ``flat`` as a nested dict of (n_t, *shape) tensors."""
    y_hat = {}
    for leaf in problem.states.leaves:
        target = y_hat
        for key in leaf.path[:-1]:
            target = target.setdefault(key, {})
        target[leaf.path[-1]] = pt.reshape(flat[:, leaf.slice], (flat.shape[0], *leaf.shape),
                                           ndim=1 + len(leaf.shape))
    return y_hat
