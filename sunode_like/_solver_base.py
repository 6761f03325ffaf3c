"""What every solver shares: option parsing, params, input checks and the C handle.

The CVODES and IDAS solvers differ only in the C functions they call and in the model
they hand over; everything here is written once for both.
"""
import math
import weakref

import numpy as np

from ._errors import SolverError
from ._sundials import ffi, lib
from ._validate import positive_int, real_array, real_scalar

METHODS = {"BDF": lib.SL_BDF, "ADAMS": lib.SL_ADAMS}
BACKWARD_METHODS = {**METHODS, "ERK": lib.SL_ERK, "DIRK": lib.SL_DIRK}
LINEAR_SOLVERS = {"dense": lib.SL_DENSE, "band": lib.SL_BAND, "sparse": lib.SL_SPARSE,
                  "spgmr": lib.SL_SPGMR}
SENS_MODES = {None: lib.SL_SENS_NONE, "simultaneous": lib.SL_SENS_SIMULTANEOUS,
              "staggered": lib.SL_SENS_STAGGERED}
INTERPOLATIONS = {"hermite": lib.SL_HERMITE, "polynomial": lib.SL_POLYNOMIAL}


def choice(name, value, options):
    if not isinstance(value, (str, type(None))) or value not in options:
        raise ValueError(f"`{name}={value!r}` is not supported; expected one of {list(options)}.")
    return options[value]


def tolerance(name, value, size, positive=False):
    """``value`` broadcast to ``size`` entries, checked finite and non-negative (an absolute
    tolerance) or, with ``positive``, in (0, 1) (a relative tolerance: at 1 or more no digit
    of the answer is asked to be right, and CVODES returns whatever it reaches)."""
    try:
        array = np.array(np.broadcast_to(real_array(name, value), (size,)))
    except ValueError:
        raise ValueError(f"`{name}` must be a scalar or have {size} entries; got shape "
                         f"{np.shape(value)}.") from None
    if np.any(~np.isfinite(array) | ((array <= 0) if positive else (array < 0))):
        raise ValueError(f"`{name}` must be finite and {'positive' if positive else 'non-negative'}; "
                         f"got {value!r}.")
    if positive and np.any(array >= 1):
        raise ValueError(f"`{name}={value!r}` must be below 1 (a relative error of 100%); typical "
                         "values are 1e-4 to 1e-10.")
    return array


def constraint_codes(states, constraints):
    """``constraints`` (a scalar, a flat vector, or a dict shaped like ``states``) as flat
    float64 codes in SUNDIALS' convention: 0 none, 1 y >= 0, 2 y > 0, -1 y <= 0, -2 y < 0."""
    if np.ndim(constraints) == 0 and not isinstance(constraints, dict):
        constraints = np.full(states.size, float(constraints))
    flat = states.renamed("constraints").flatten(constraints)
    if not np.all(np.isin(flat, (-2.0, -1.0, 0.0, 1.0, 2.0))):
        raise ValueError(f"`constraints` entries must be in {{-2, -1, 0, 1, 2}}; got "
                         f"{sorted(set(flat.tolist()))}.")
    return flat


def n_times(tvals):
    """The number of output times, for sizing buffers; a TypeError/ValueError naming ``tvals``
    if it is not a 1-d array of real numbers."""
    array = real_array("tvals", tvals)
    if array.ndim != 1:
        raise ValueError(f"`tvals` must be a 1-d array of output times; got shape {array.shape}.")
    return len(array)


def quad_atol(atol_quad, default, quad_errcon):
    """The adjoint quadrature's absolute tolerance (``default`` if ``atol_quad`` is None)."""
    value = float(tolerance("atol_quad", default if atol_quad is None else atol_quad, 1)[0])
    if quad_errcon and value == 0:
        # The quadrature starts at 0, where a zero atol makes its error weight infinite.
        raise ValueError("`atol_quad` must be positive while `quad_errcon=True` (its default "
                         "is the smallest atol_backward); got 0.")
    return value


def check_output(name, array, shape):
    if not (isinstance(array, np.ndarray) and array.dtype == np.float64 and array.shape == shape
            and array.flags.c_contiguous and array.flags.writeable):
        got = f"{array.dtype} array of shape {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
        raise ValueError(f"`{name}` must be a writeable C-contiguous float64 array of shape {shape}; "
                         f"got {got}. Use make_output_buffers.")


def ptr(array):
    return ffi.from_buffer("double[]", array)


def int_ptr(array):
    return ffi.from_buffer("int64_t[]", array)


class Options:
    """Validated options of one integration direction, as the C struct ``sl_options``;
    errors name them with ``suffix`` appended (``"_backward"``: ``rtol_backward``)."""

    def __init__(self, n, solver, linear_solver, rtol, atol, max_steps, bandwidths, tstop=None,
                 methods=METHODS, suffix=""):
        self.struct = s = ffi.new("sl_options *")
        self.atol = tolerance("atol" + suffix, atol, n)
        s.method = choice("solver" + suffix, solver, methods)
        s.linear_solver = choice("linear_solver" + suffix, linear_solver, LINEAR_SOLVERS)
        if s.linear_solver == lib.SL_SPARSE and not lib.SL_HAVE_KLU:
            raise ValueError(
                f"`linear_solver{suffix}='sparse'` needs KLU, which this build of sunode_like lacks (its "
                "SUNDIALS has no KLU, or klu.h was not found when it was built). Use 'dense', "
                "'band' or 'spgmr', or install libsuitesparse-dev and a SUNDIALS with KLU (or set "
                "KLU_INCLUDE_DIR) and rebuild.")
        s.rtol = float(tolerance("rtol" + suffix, rtol, 1, positive=True)[0])
        s.atol = ptr(self.atol)
        s.max_steps = positive_int("max_steps" + suffix, max_steps)
        s.upper_bandwidth, s.lower_bandwidth = bandwidths
        s.tstop = np.nan if tstop is None else tstop


class AbstractSolver:
    """The model, params, options and input checks of a solver over a C handle.

    Subclasses set ``_c`` to the prefix of their C functions (``"sl_cvodes"``) and call
    `_create` with the C-specific structs.
    """

    _c = None
    # The kernels `_diagnose` checks when no kernel call failed, and how many vectors of
    # n_states the state a kernel reads holds (1 for ODEs: y; 2 for DAEs: [y, y']).
    _kernels = ()
    _state_vectors = 1

    def __init__(self, problem, model, *, solver, linear_solver, rtol, atol, max_steps, tstop,
                 bandwidths):
        self.problem = problem
        self.n_states = problem.n_states
        self._model = model
        self._params = np.zeros(max(problem.n_params, 1))
        self._params_set = not problem.uses_params  # a solve before set_params would use p = 0
        self._y0_layout = problem.states.renamed("y0")
        if tstop is not None:
            tstop = real_scalar("tstop", tstop)
            if not np.isfinite(tstop):
                raise ValueError(f"`tstop={tstop!r}` must be finite.")
        self.tstop = tstop
        self._bandwidths = self._checked_bandwidths(bandwidths, model)
        self._options = Options(self.n_states, solver, linear_solver, rtol, atol, max_steps,
                                self._bandwidths, tstop)
        self._ptr = None

    def _checked_bandwidths(self, bandwidths, model):
        """(upper, lower) for the band solver: at least the Jacobian pattern's (entries
        outside the band have no place in SUNDIALS' band matrix), at most n_states - 1."""
        pattern = (int(model.UPPER_BANDWIDTH), int(model.LOWER_BANDWIDTH))
        if bandwidths is None:
            return pattern
        if (not isinstance(bandwidths, (tuple, list, np.ndarray)) or len(bandwidths) != 2
                or not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in bandwidths)):
            raise TypeError(f"`bandwidths={bandwidths!r}` must be a pair of integers (upper, lower).")
        upper, lower = (int(b) for b in bandwidths)
        largest = self.n_states - 1
        if not (pattern[0] <= upper <= largest and pattern[1] <= lower <= largest):
            raise ValueError(
                f"`bandwidths={bandwidths!r}` must lie between the Jacobian's own bandwidths {pattern} and "
                f"n_states - 1 = {largest} in each entry. Leave it None to use the Jacobian's.")
        return upper, lower

    def _create(self, *args):
        out = ffi.new(self._c + " **")
        flag = getattr(lib, self._c + "_create")(*args, out)
        self._ptr = out[0]
        self._finalizer = weakref.finalize(self, getattr(lib, self._c + "_free"), self._ptr)
        if flag:
            self._raise(flag)

    def _raise(self, flag, problem="forward"):
        """SolverError for a failed ``problem`` ("forward" or "backward") solve. It names the
        equations where a kernel gave non-finite or unstable values (`_diagnose`): at the
        state of the last failed kernel call, else at the forward state at the failure time."""
        if self._ptr is None or self._ptr == ffi.NULL:
            raise SolverError(flag, "MEM_FAIL", np.nan, "out of memory")
        status = getattr(lib, self._c + "_status")(self._ptr)
        kernel = ffi.string(status.kernel).decode()
        state = np.zeros(self._state_vectors * self.n_states)
        if kernel:
            t, kernels = status.kernel_t, (kernel,)
            state[:] = np.frombuffer(ffi.buffer(status.kernel_y, 8 * state.size))
        else:
            t, kernels = status.t, self._kernels
        found = kernel or not getattr(lib, self._c + "_forward_state")(
            self._ptr, problem == "backward", t, ptr(state))
        raise SolverError(flag, ffi.string(status.flag_name).decode(), status.t,
                          ffi.string(status.message).decode(), problem,
                          self._diagnose(t, state, kernels) if found else "")

    def stats(self):
        """Work counters of the last solve as a dict (steps, rhs_evals, ...; the backward
        ones are summed over the output intervals of the last backward solve)."""
        stats = ffi.new("sl_stats *")
        getattr(lib, self._c + "_stats")(self._ptr, stats)
        return {name: getattr(stats, name) for name in dir(stats)}

    # -- params ---------------------------------------------------------------------------
    def set_params_dict(self, params):
        """Set all params from a (nested) dict of values shaped like ``problem.params``."""
        self.set_params(self.problem.params.flatten(params))

    def set_params(self, params):
        """Set all params from a flat float64 vector (or a ``params_dtype`` array)."""
        flat = self.problem.params.flatten(params)
        if not np.all(np.isfinite(flat)):
            bad = [leaf.name for leaf in self.problem.params.leaves if not np.all(np.isfinite(flat[leaf.slice]))]
            raise ValueError(f"`params` entries {bad} are not finite (NaN or inf); expected finite numbers.")
        self._params[:self.problem.n_params] = flat
        self._params_set = True

    def get_params(self):
        """A copy of the flat params vector."""
        return self._params[:self.problem.n_params].copy()

    # -- input checks ---------------------------------------------------------------------
    def _flat_state(self, value, name):
        """A finite flat state vector from a flat, structured or dict ``value``."""
        if type(value) is np.ndarray and value.dtype == np.float64 and value.shape == (self.n_states,):
            flat = np.ascontiguousarray(value)  # the fast path of the PyTensor Ops
        else:
            flat = self.problem.states.renamed(name).flatten(value)
        if not np.isfinite(flat).all():
            bad = [leaf.name for leaf in self.problem.states.leaves if not np.all(np.isfinite(flat[leaf.slice]))]
            raise ValueError(f"`{name}` is not finite for states {bad}.")
        return flat

    def _check_times(self, t0, tvals):
        """Checked (t0, tvals) of a solve, which also needs the params to have been set."""
        if not self._params_set:
            raise ValueError(f"The params are not set; call set_params_dict (or set_params) before solving. "
                             f"Entries: {[leaf.name for leaf in self.problem.params.leaves]}.")
        t0 = t0 if type(t0) is float else real_scalar("t0", t0)
        if not (type(tvals) is np.ndarray and tvals.dtype == np.float64 and tvals.flags.c_contiguous):
            tvals = np.ascontiguousarray(real_array("tvals", tvals))
        if (tvals.ndim == 1 and len(tvals) and math.isfinite(t0) and np.isfinite(tvals).all()
                and (tvals[1:] > tvals[:-1]).all() and tvals[0] >= t0
                and (self.tstop is None or tvals[-1] <= self.tstop)):
            return t0, tvals
        if not np.isfinite(t0):
            raise ValueError(f"`t0={t0!r}` must be finite.")
        if tvals.ndim != 1 or len(tvals) == 0:
            raise ValueError(f"`tvals` must be a non-empty 1-d array; got shape {tvals.shape}.")
        if not np.all(np.isfinite(tvals)):
            raise ValueError(f"`tvals` must be finite; got NaN/inf at indices {np.flatnonzero(~np.isfinite(tvals)).tolist()}.")
        if len(tvals) > 1 and not np.all(tvals[1:] > tvals[:-1]):
            i = int(np.flatnonzero(tvals[1:] <= tvals[:-1])[0])
            raise ValueError(f"`tvals` must be strictly increasing; got tvals[{i}]={tvals[i]} >= "
                             f"tvals[{i + 1}]={tvals[i + 1]}.")
        if tvals[0] < t0:
            raise ValueError(f"`tvals` must not start before t0; got tvals[0]={tvals[0]} < t0={t0}.")
        raise ValueError(f"`tvals` must end by tstop; got tvals[-1]={tvals[-1]} > tstop={self.tstop}.")

    def _check_backward(self, t_last, t0, tvals, forward_key, grads, grad_out, lambda_out):
        """Checked (t0, tvals, grads) of a backward solve that follows the forward solve
        with key ``forward_key`` = (t0, tvals bytes, params bytes), or None."""
        t0, tvals = self._check_times(t0, tvals)
        if real_scalar("t_last", t_last) != tvals[-1]:
            raise ValueError(f"`t_last={t_last!r}` must equal tvals[-1]={tvals[-1]}.")
        if forward_key != (t0, tvals.tobytes(), self._params.tobytes()):
            raise ValueError("solve_backward needs a successful solve_forward with the same t0, "
                             "tvals and params first.")
        grads = np.ascontiguousarray(real_array("grads", grads))
        if grads.shape != (len(tvals), self.n_states):
            raise ValueError(f"`grads` has shape {grads.shape}; expected {(len(tvals), self.n_states)}.")
        if not np.all(np.isfinite(grads)):
            raise ValueError("`grads` must be finite.")
        check_output("grad_out", grad_out, (self.problem.n_dparams,))
        check_output("lambda_out", lambda_out, (self.n_states,))
        return t0, tvals, grads
