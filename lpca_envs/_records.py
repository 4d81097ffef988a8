"""`fast_init`: a quicker ``__init__`` for the frozen, slotted dataclasses built every episode.

A frozen dataclass's generated ``__init__`` sets each field with ``object.__setattr__``
(a name lookup through the type per field). Setting a slot through its member descriptor
directly does the same thing in about two thirds of the time, and every episode builds a
dozen of these records (task, utterances, verifier, messages, verdicts...). The
replacement takes the same parameters with the same defaults (``default_factory`` fields
get a fresh value each call), sets every field the generated one sets, in the same order,
and then calls ``__post_init__`` if the class has one; the class stays a dataclass
(fields, repr, eq, hash, replace, pickling and `inspect.signature` are unchanged).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, TypeVar

C = TypeVar("C", bound=type)


def fast_init(cls: C) -> C:
    """Replace the generated ``__init__`` of a frozen ``slots=True`` dataclass (decorator)."""
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    if not (params.frozen and params.init and "__slots__" in cls.__dict__):
        raise TypeError(f"fast_init needs a frozen dataclass with slots, got {cls.__name__}")
    ns: dict[str, Any] = {"_MISSING": dataclasses.MISSING}
    args: list[str] = []
    body: list[str] = []
    fields = dataclasses.fields(cls)
    if len(fields) != len(cls.__dataclass_fields__) or any(f.kw_only for f in fields):
        raise TypeError(f"fast_init handles plain positional fields only, not {cls.__name__}'s")
    for f in fields:
        setter = f"_set_{f.name}"
        ns[setter] = cls.__dict__[f.name].__set__  # the slot's member descriptor
        has_default = f.default is not dataclasses.MISSING
        has_factory = f.default_factory is not dataclasses.MISSING
        if f.init:
            if has_default:
                ns[f"_default_{f.name}"] = f.default
                args.append(f"{f.name}=_default_{f.name}")
                value = f.name
            elif has_factory:
                ns[f"_factory_{f.name}"] = f.default_factory
                args.append(f"{f.name}=_MISSING")
                value = f"_factory_{f.name}() if {f.name} is _MISSING else {f.name}"
            else:
                args.append(f.name)
                value = f.name
        elif has_default:
            ns[f"_default_{f.name}"] = f.default
            value = f"_default_{f.name}"
        elif has_factory:
            ns[f"_factory_{f.name}"] = f.default_factory
            value = f"_factory_{f.name}()"
        else:
            continue  # init=False without a default: the generated __init__ leaves it unset
        body.append(f"    {setter}(self, {value})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    src = f"def __init__(self, {', '.join(args)}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(src, ns)  # the source is generated from the class's own field names
    init = ns["__init__"]
    init.__signature__ = inspect.signature(cls.__init__)  # type: ignore[attr-defined]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[misc]
    return cls
