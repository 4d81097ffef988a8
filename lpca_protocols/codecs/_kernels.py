"""One loader for the codecs' optional numba kernels (`_ggml_jit`, `_tcq_jit`)."""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any


def load_kernels(module: str, label: str) -> Any:
    """``lpca_protocols.codecs.<module>``, or None: numba missing, ``LPCA_NO_JIT`` set, or a failed
    load (warned about, naming `label`; the numpy path still works). Callers cache the result."""
    if os.environ.get("LPCA_NO_JIT", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module(f"lpca_protocols.codecs.{module}")
    except ImportError:
        return None
    except Exception as exc:  # numba present but unusable (LLVM, cache, ...): numpy still works
        warnings.warn(f"{label}: numba kernels unavailable, using numpy ({exc!r})", stacklevel=4)
        return None
