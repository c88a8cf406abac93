"""What goes into the sandbox: cloudpickle, by value for the code the sandbox
cannot import (a test module, a script's helpers), keeping code objects'
file names so that tracebacks in the sandbox show the real lines."""

from __future__ import annotations

import io
import os
import sys
import types
from typing import Any, Dict, Tuple

from ..rootfs.layout import HOST_SYSTEM_DIRS, interpreter_prefixes

__all__ = ["dumps"]


def _visible_roots() -> Tuple[str, ...]:
    return tuple(HOST_SYSTEM_DIRS) + tuple(interpreter_prefixes())


_IMPORTABLE: Dict[str, bool] = {}  # module name -> its file is visible inside


def _importable_inside(obj: Any) -> bool:
    """True when obj's module lives under a directory the host view shows."""
    name = getattr(obj, "__module__", None) or ""
    known = _IMPORTABLE.get(name)
    if known is None:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if module is None or path is None:
            known = module is not None and name in sys.builtin_module_names
        else:
            real = os.path.realpath(path)
            known = any(real == root or real.startswith(root.rstrip("/") + "/") for root in _visible_roots())
        _IMPORTABLE[name] = known
    return known


def _pickler_class() -> type:
    import cloudpickle
    from cloudpickle import cloudpickle_fast as fast  # cloudpickle 2.x keeps the reducers here

    class Pickler(cloudpickle.CloudPickler):
        """Functions and classes of modules the sandbox cannot import (a test
        module, a script's helpers) are pickled by value."""

        def reducer_override(self, obj):
            if isinstance(obj, types.CodeType):
                return _code_reduce(obj)
            if isinstance(obj, type(dumps)) and not _importable_inside(obj):
                return self._dynamic_function_reduce(obj)
            if isinstance(obj, type) and obj.__module__ != "builtins" and not _importable_inside(obj):
                return fast._dynamic_class_reduce(obj)
            return super().reducer_override(obj)

    return Pickler


def _code_reduce(code: types.CodeType) -> tuple:
    """cloudpickle's reduction of a code object, keeping its file name
    (cloudpickle 3 writes ``<dynamic-code>``): tracebacks in the sandbox
    then name the real file and show its lines when it is visible there."""
    from cloudpickle import cloudpickle_fast as fast

    rebuild, args = fast._code_reduce(code)
    if "<dynamic-code>" in args:  # (searched in C: this runs for every function pickled by value)
        fields = list(args)
        fields[fields.index("<dynamic-code>")] = code.co_filename
        args = tuple(fields)
    return rebuild, args


_PICKLER: Dict[str, type] = {}


def dumps(value: Any) -> bytes:
    """cloudpickle, by value for code the sandbox cannot import."""
    import cloudpickle

    if "class" not in _PICKLER:
        _PICKLER["class"] = _pickler_class()
    buffer = io.BytesIO()
    _PICKLER["class"](buffer, protocol=cloudpickle.DEFAULT_PROTOCOL).dump(value)
    return buffer.getvalue()
