"""A kernel's expressions -> Python source for numba: shared subexpressions computed once,
statements of the same shape evaluated by one loop.

``out[i] = exprs[i]`` is lowered in three steps:

1. Sharing: sympy builds expressions as trees whose equal subtrees are equal (hashable)
   objects, so counting how often each subtree occurs finds the common subexpressions in
   one pass. A subtree used twice or more (and worth more than one operation) becomes a
   temporary ``x_k``.
2. Statements: one per temporary and one per output, over the inputs (``y[j]``,
   ``p[j]``, ``t``) and earlier temporaries. A temporary's *level* is one more than the
   highest level of the temporaries it reads; outputs come last.
3. Loops: statements of one level whose *shape* agrees (the expression with each distinct
   input or temporary replaced by a numbered slot, the arguments of sums and products in
   a canonical order) become one loop ``target[T[k]] = f(y[S0[k]], w[S1[k]], ...)`` over
   index arrays. The length of the code numba compiles, which sets its compile time, then
   grows with the number of distinct shapes, not with the size of the model: a 100-point
   stencil compiles like a 3-point one.

The terms of one shape in a long sum become a loop that accumulates (`Sum`). Statements
that share their shape with few others stay straight-line code, split into functions of
`STATEMENTS_PER_FUNCTION` statements.
"""
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import sympy
from sympy.printing.pycode import PythonCodePrinter

class _KernelPrinter(PythonCodePrinter):
    """Python's printer, except for what would not compile or not be accurate in numba: a
    Piecewise without an otherwise branch ends in ``undefined_piece(t)``, which raises,
    instead of ``None`` (numba 0.68 refuses to type None as a float, older versions raised
    only when it was stored), and coth is 1/tanh."""

    def _print_Piecewise(self, expr):
        if expr.args[-1].cond == sympy.true:
            return super()._print_Piecewise(expr)
        text = "undefined_piece(t)"
        for value, condition in reversed(expr.args):
            text = f"(({self._print(value)}) if ({self._print(condition)}) else {text})"
        return text

    def _print_coth(self, expr):
        # sympy prints coth through exp, which overflows to inf/inf = NaN for |x| > 710 and
        # turns an inner sec or csc into complex exponentials.
        return f"(1/math.tanh({self._print(expr.args[0])}))"


# A shape shared by this many statements becomes a loop, and by this many terms of a sum
# in straight-line code an accumulating loop.
MIN_LOOP = 4
MIN_SUM = 8
# Statements per numba function. Numba's compile time grows quadratically with the length
# of a function (its SSA pass scans the block once per variable), so long straight-line
# code is split into parts of this size that pass temporaries through a work array.
STATEMENTS_PER_FUNCTION = 200
_LOOP_COST = 4  # a loop's weight in that budget


@dataclass
class Statement:
    """``target = expr``, target ("out", i) or ("w", k) for temporary ``x_k``."""

    target: tuple
    expr: sympy.Expr
    level: int
    shape: str = ""
    slots: list = field(default_factory=list)  # distinct leaves, in canonical order
    pattern: tuple = ()  # slot number of each leaf occurrence


@dataclass
class Loop:
    """Statements of one shape: the first one's expression over slots is the template."""

    members: list


@dataclass
class Sum:
    """``x_k`` = the sum of terms of one shape (`Statement` s without a target), as a loop
    that accumulates: a long sum (a mass-action species' balance) would be straight-line
    code as long as the number of its terms."""

    target: tuple
    level: float
    members: list


def _temporary(k):
    return sympy.Symbol(f"x_{k}")


def _worth_sharing(node):
    # Conditions stay inside their Piecewise (a temporary is a float), and one operation
    # on atoms (-y_0, p_1*y_2, y_3**2) is cheaper to repeat than to store.
    return isinstance(node, sympy.Expr) and not (len(node.args) <= 2 and all(arg.is_Atom for arg in node.args))


def statements(exprs):
    """The temporaries' and the outputs' `Statement` s, temporaries in dependency order."""
    uses = defaultdict(int)
    order, seen = [], set()
    for expr in exprs:
        uses[expr] += 1
        stack = [(expr, False)]
        while stack:  # post-order walk, each distinct subtree once
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if node in seen or node.is_Atom:
                continue
            seen.add(node)
            stack.append((node, True))
            for arg in node.args:
                uses[arg] += 1
                stack.append((arg, False))
    temporaries = {}  # node -> (symbol, level)
    rebuilt = {}      # node -> (expression over temporaries, its level)

    def rebuild(node):
        if node in temporaries:
            symbol, level = temporaries[node]
            return symbol, level
        if node.is_Atom:
            return node, 0
        return rebuilt[node]

    result = []
    for node in order:
        args = [rebuild(arg) for arg in node.args]
        level = max((lv for _, lv in args), default=0)
        expr = node if all(a is b for a, (b, _) in zip(node.args, args)) else node.func(*(a for a, _ in args))
        rebuilt[node] = (expr, level)
        if uses[node] >= 2 and _worth_sharing(node):
            k = len(temporaries)
            temporaries[node] = (_temporary(k), level + 1)
            result.append(Statement(("w", k), expr, level + 1))
    last = max((s.level for s in result), default=0) + 1
    for i, expr in enumerate(exprs):
        result.append(Statement(("out", i), rebuild(expr)[0], last))
    return result


def _shape(expr, kinds, memo):
    """(shape string, arguments in canonical order, sorted leaves) of ``expr``. ``kinds``
    maps inputs and temporaries to (kind, index); they appear in the shape as their kind
    ("y", "p", "w"), everything else (numbers, t) as itself."""
    if expr in memo:
        return memo[expr]
    if expr.is_Atom:
        leaf = kinds.get(expr)
        result = (leaf[0], (), (leaf,)) if leaf else (sympy.srepr(expr), (), ())
    else:
        shaped = [_shape(arg, kinds, memo) + (arg,) for arg in expr.args]
        if expr.is_Add or expr.is_Mul:
            # Order the arguments by their shapes, so equal sums over different symbols line
            # up (sympy orders them by name), and equal shapes by their leaves' indices, so
            # a stencil's left neighbour comes first in every member (evenly spaced slots).
            shaped.sort(key=lambda entry: (entry[0], entry[2]))
        inner = ",".join(entry[0] for entry in shaped)
        result = (f"{type(expr).__name__}({inner})", tuple(entry[3] for entry in shaped),
                  tuple(sorted(leaf for entry in shaped for leaf in entry[2])))
    memo[expr] = result
    return result


def _slots(expr, kinds, memo, slots, pattern):
    """Append the leaves of ``expr``, in canonical order, to ``slots`` (distinct ones,
    dict leaf -> slot number) and their slot numbers to ``pattern``."""
    if expr.is_Atom:
        if expr in kinds:
            pattern.append(slots.setdefault(expr, len(slots)))
        return
    for arg in memo[expr][1]:
        _slots(arg, kinds, memo, slots, pattern)


def _leaf_kinds(inputs, statements_):
    kinds = dict(inputs)
    kinds.update({_temporary(s.target[1]): ("w", s.target[1]) for s in statements_ if s.target[0] == "w"})
    return kinds


def _describe(s, kinds, memo):
    """Set the shape, slots and pattern of a statement."""
    slots, pattern = {}, []
    s.shape = _shape(s.expr, kinds, memo)[0]
    _slots(s.expr, kinds, memo, slots, pattern)
    s.slots, s.pattern = list(slots), tuple(pattern)


def _split_sums(statements_, kinds, memo, k):
    """`Sum` s for the terms of one shape in the long sums among ``statements_``, which
    are replaced by their symbols ``x_k``, ``x_{k+1}``, ..."""
    sums = []
    for s in statements_:
        if not (s.expr.is_Add and len(s.expr.args) >= MIN_SUM):
            continue
        groups = defaultdict(list)
        for term in s.expr.args:
            term = Statement(None, term, s.level)
            _describe(term, kinds, memo)
            groups[(term.shape, term.pattern)].append(term)
        rest = []
        for terms in groups.values():
            if len(terms) < MIN_SUM:
                rest += [term.expr for term in terms]
                continue
            symbol = _temporary(k)
            kinds[symbol] = ("w", k)
            # Between the temporaries the terms read (levels below s.level) and s.
            sums.append(Sum(("w", k), s.level - 0.5, terms))
            rest.append(symbol)
            k += 1
        if len(rest) < len(s.expr.args):
            s.expr = sympy.Add(*rest)
            _describe(s, kinds, memo)
    return sums


def schedule(statements_, inputs):
    """Statements, `Loop` s and `Sum` s in an order that computes every temporary before
    its use."""
    kinds = _leaf_kinds(inputs, statements_)
    memo = {}
    groups = defaultdict(list)
    for s in statements_:
        _describe(s, kinds, memo)
        groups[(s.level, s.target[0], s.shape, s.pattern)].append(s)
    loops = [members for members in groups.values() if len(members) >= MIN_LOOP]
    single = [s for members in groups.values() if len(members) < MIN_LOOP for s in members]
    first_free = 1 + max((s.target[1] for s in statements_ if s.target[0] == "w"), default=-1)
    items = [(total.level, [total]) for total in _split_sums(single, kinds, memo, first_free)]
    items += [(members[0].level, [Loop(members)]) for members in loops]
    items += [(s.level, [s]) for s in single]
    items.sort(key=lambda item: item[0])  # stable: sums before their statements' level
    return [item for _, group in items for item in group]


def kernel_source(name, exprs, inputs):
    """Python source computing ``out[i] = exprs[i]`` from ``t`` and the indexables ``y``,
    ``p``, ``out`` (arrays or raw pointers); ``inputs`` maps each input symbol to
    ("y" | "p", index).

    Returns (module lines, body lines): the module-level index arrays and part functions
    ``<name>_part<j>(t, y, p, out, w)``, and the 4-space indented body of the kernel
    (which allocates the work array ``w`` if it needs one).
    """
    printer = _KernelPrinter({"fully_qualified_modules": True, "standard": "python3"})
    parts = _split(schedule(statements(exprs), inputs))
    temporary_index, work_slot = _work_slots(parts)
    module, bodies, loops = [], [], 0
    for part in parts:
        body, local, loads = [], set(), {}
        for item in part:
            if isinstance(item, (Loop, Sum)):
                array = f"{name.upper()}_LOOP{loops}"
                loops += 1
                source = _LoopSource(array, item, inputs, temporary_index, work_slot)
                body += source.lines(printer)
                if source.index_array():
                    module.append(source.index_array())
                if isinstance(item, Sum):
                    k = item.target[1]
                    local.add(k)
                    if k in work_slot:
                        body.append(f"    w[{work_slot[k]}] = x_{k}")
                continue
            for leaf in item.slots:
                if leaf in inputs:
                    kind, index = inputs[leaf]
                    loads[leaf] = f"{kind}[{index}]"
                elif temporary_index[leaf] not in local:  # from a loop or an earlier part
                    body.append(f"    {leaf} = w[{work_slot[temporary_index[leaf]]}]")
                    local.add(temporary_index[leaf])
            kind, index = item.target
            code = printer.doprint(item.expr)
            if kind == "out":
                body.append(f"    out[{index}] = {code}")
                continue
            body.append(f"    x_{index} = {code}")
            local.add(index)
            if index in work_slot:
                body.append(f"    w[{work_slot[index]}] = x_{index}")
        bodies.append([f"    {leaf} = {source}" for leaf, source in loads.items()] + body)
    head = [f"    w = {work_array(len(work_slot))}"] if work_slot else []
    if len(bodies) == 1:
        return module, head + bodies[0]
    njit = "@numba.njit(cache=True, error_model='numpy')"
    calls = []
    for number, body in enumerate(bodies):
        module += ["", "", njit, f"def {name}_part{number}(t, y, p, out, w):", *body]
        calls.append(f"    {name}_part{number}(t, y, p, out, {'w' if work_slot else 'None'})")
    return module, head + calls


# Work arrays up to this many doubles live on the kernel's stack (no allocation per call,
# and numba need not compile np.empty's implementation); larger ones on the heap.
STACK_WORK_ARRAY = 8192


def work_array(size):
    """Code for a float64 work array of ``size`` entries."""
    return f"stack_array({size})" if size <= STACK_WORK_ARRAY else f"np.empty({size})"


def _split(items):
    """Items in consecutive parts of at most `STATEMENTS_PER_FUNCTION` statements."""
    parts, cost = [[]], 0
    for item in items:
        weight = 1 if isinstance(item, Statement) else _LOOP_COST
        if cost + weight > STATEMENTS_PER_FUNCTION and parts[-1]:
            parts.append([])
            cost = 0
        parts[-1].append(item)
        cost += weight
    return parts


def _members(item):
    return [item] if isinstance(item, Statement) else item.members


def _work_slots(parts):
    """({temporary symbol: k}, {k: slot in w}): a temporary lives in the work array if a
    loop writes or reads it or a later part reads it, otherwise in a local variable."""
    defined_in, stored = {}, set()
    for number, part in enumerate(parts):
        for item in part:
            targets = [item.target] if isinstance(item, Sum) else [s.target for s in _members(item)]
            for kind, k in targets:
                if kind == "w":
                    defined_in[k] = number
                    if isinstance(item, Loop):
                        stored.add(k)
    temporary_index = {_temporary(k): k for k in defined_in}
    for number, part in enumerate(parts):
        for item in part:
            looped = not isinstance(item, Statement)
            for s in _members(item):
                for leaf in s.slots:
                    k = temporary_index.get(leaf)
                    if k is not None and (looped or defined_in[k] != number):
                        stored.add(k)
    return temporary_index, {k: j for j, k in enumerate(sorted(stored))}


class _LoopSource:
    """The loop of a `Loop` or `Sum`, and its index array. A slot that holds the same
    entry for every member (a shared parameter) is loaded once, before the loop; evenly
    spaced indices (a stencil's neighbours, the i-th rate of the i-th reaction) are
    computed from k, which also lets LLVM vectorise the loop; the others are read from
    the module-level array ``array`` (as the local ``index``)."""

    def __init__(self, array, loop, inputs, temporary_index, work_slot):
        self.array, self.loop, self.rows = array, loop, []
        sources = []  # per slot: (array name, [index per member])
        for j in range(len(loop.members[0].slots)):
            where = [self._source(s.slots[j], inputs, temporary_index, work_slot) for s in loop.members]
            sources.append((where[0][0], [index for _, index in where]))
        self.hoisted = [f"    a_{j} = {kind}[{idx[0]}]" for j, (kind, idx) in enumerate(sources)
                        if len(set(idx)) == 1]
        self.loads = [f"        a_{j} = {kind}[{self._index(idx)}]" for j, (kind, idx) in enumerate(sources)
                      if len(set(idx)) > 1]
        if not isinstance(loop, Sum):
            self.target = self._index([s.target[1] if s.target[0] == "out" else work_slot[s.target[1]]
                                       for s in loop.members])

    @staticmethod
    def _source(leaf, inputs, temporary_index, work_slot):
        if leaf in inputs:
            return inputs[leaf]
        return "w", work_slot[temporary_index[leaf]]

    def _index(self, indices):
        """Code for the k-th of ``indices``."""
        steps = set(np.diff(indices).tolist())
        if len(steps) == 1:
            step, = steps
            return f"{indices[0]} + {step} * k"
        self.rows.append(indices)
        return f"index[{len(self.rows) - 1}, k]"

    def index_array(self):
        """The module-level line defining the index array, or None if none is needed."""
        if not self.rows:
            return None
        data = np.array(self.rows, dtype=np.int64)
        return f"{self.array} = np.array({data.ravel().tolist()!r}, dtype=np.int64).reshape({data.shape})"

    def lines(self, printer):
        first = self.loop.members[0]
        template = printer.doprint(first.expr.xreplace(
            {leaf: sympy.Symbol(f"a_{j}") for j, leaf in enumerate(first.slots)}))
        # One reference to the global per loop: numba formats each one it meets.
        bind = [f"    index = {self.array}"] if self.rows else []
        head = [*self.hoisted, *bind, f"    for k in range({len(self.loop.members)}):", *self.loads]
        if isinstance(self.loop, Sum):
            total = f"x_{self.loop.target[1]}"
            return [f"    {total} = 0.0", *head, f"        {total} += {template}"]
        target = "out" if first.target[0] == "out" else "w"
        return [*head, f"        {target}[{self.target}] = {template}"]
