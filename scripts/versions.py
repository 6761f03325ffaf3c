"""Print the versions a test run uses: Python, the SUNDIALS the extension was built against
(and whether it has KLU), and the Python packages that matter, for the sunode_like of the
checkout this script is in."""
import importlib.metadata
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from sunode_like._sundials import lib  # noqa: E402

sundials = f"{lib.SUNDIALS_VERSION_MAJOR}.{lib.SUNDIALS_VERSION_MINOR}.{lib.SUNDIALS_VERSION_PATCH}"
print(f"python {sys.version.split()[0]} ({sys.executable}) | SUNDIALS {sundials}, "
      f"{'with' if lib.SL_HAVE_KLU else 'without'} KLU")
packages = []
for name in ("numpy", "scipy", "sympy", "numba", "cffi", "xarray", "pytensor", "pymc", "arviz",
             "nutpie"):
    try:
        packages.append(f"{name} {importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
        packages.append(f"{name} -")
print(" | ".join(packages))
