"""sunode's module path ``sunode.symode``: `SympyProblem`."""
from ._problem import SympyProblem as SympyProblem
