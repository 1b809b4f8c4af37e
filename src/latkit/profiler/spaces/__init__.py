"""Search spaces, declared in one place (see :mod:`latkit.profiler.spaces.base`)."""

from latkit.profiler.spaces.base import (
    Arch,
    Choice,
    Layer,
    Network,
    SearchSpace,
    get_space,
    list_spaces,
    register_space,
)

# importing the modules registers the spaces
from latkit.profiler.spaces import fbnet, nasbench201, ofa_mbv3, proxyless  # noqa: E402,F401

__all__ = [
    "Arch",
    "Choice",
    "Layer",
    "Network",
    "SearchSpace",
    "get_space",
    "list_spaces",
    "register_space",
]
