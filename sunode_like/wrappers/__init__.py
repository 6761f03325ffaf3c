"""PyTensor wrappers: ``sunode_like.wrappers.as_pytensor`` (ODEs) and ``as_pytensor_dae``.

Imported here so that ``import sunode_like.wrappers`` makes them available, as in sunode.
"""
from . import as_pytensor as as_pytensor
from . import as_pytensor_dae as as_pytensor_dae
