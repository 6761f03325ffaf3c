"""Sphinx configuration of the sunode_like documentation.

Build (warnings are errors, every notebook is executed):
    sphinx-build -W --keep-going -b html docs docs/_build/html
"""
import sunode_like

project = "sunode_like"
author = "the sunode_like developers"
copyright = "the sunode_like developers"
version = release = sunode_like.__version__

extensions = [
    "myst_nb",  # MyST markdown pages and executed notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

# `notebooks` is a symlink to ../notebooks, so the notebooks live in one place.
exclude_patterns = [
    "_build",
    "**.ipynb_checkpoints",
]

# -- MyST and notebook execution ---------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"  # CI executes every notebook on every build
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_timeout = 900  # seconds per cell; the first numba compile of a model is slow
nb_execution_show_tb = True  # print the traceback of a failing cell in the build log
nb_merge_streams = True

# -- API reference ------------------------------------------------------------------------
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"
autoclass_content = "class"
napoleon_google_docstring = False
napoleon_numpy_docstring = True

# A reference to a sunode_like name that does not exist fails the build. Types written in
# prose in numpy docstrings ("(n_t, n_states) array", "callable") are not targets.
nitpicky = True
nitpick_ignore_regex = [(r"py:(class|obj)", r"(?!sunode_like\b).*")]

# -- HTML ---------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"sunode_like {release}"
