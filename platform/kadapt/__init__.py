"""kadapt: adapt a language model to a company's own knowledge, one knowledge base at a time."""

from kadapt.errors import KadaptError
from kadapt.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["KadaptError", "__version__", "hookimpl"]
