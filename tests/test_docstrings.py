"""Every public name carries a numpydoc docstring.

Public means a function or class listed in a package ``__init__``'s ``__all__``, and the public
methods of those classes (their own and those inherited from the project's classes). Each has a
docstring; one that takes parameters (beyond ``self``/``cls``) has a ``Parameters`` section
naming every one of them (``*args``/``**kwargs`` as ``*args``/``**kwargs`` or ``*name``/
``**name``), and one whose return annotation is not ``None`` (or that has none) has a
``Returns`` (or ``Yields``) section. A class's ``__init__`` arguments are documented in the docstring of the class that
defines ``__init__`` (dataclasses excepted: their fields are their signature). Properties and
dunders other than ``__init__`` and ``__call__`` are not checked.
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

PACKAGES = [
    "hubcat",
    "hubcat.storage",
    "hubcat.progress",
    "hubcat.synthetic",
    "hubcat.keys",
    "tiling",
    "embeddings",
    "grid",
    "catalog",
    "catalog.provenance",
    "pipeline",
]

#: Top-level packages whose classes' methods count as the project's own.
PROJECT = ("hubcat", "tiling", "embeddings", "grid", "catalog", "pipeline")

#: Public names not checked. The list is empty: every public name is checked. A new entry needs
#: a reason in a comment beside it (``test_exclusions_are_still_needed`` fails once the name is
#: documented, so an entry cannot outlive its reason).
EXCLUDED: set[str] = set()

#: Files whose public names are not checked. Empty, as above; a new entry needs a reason too.
EXCLUDED_FILES: tuple[str, ...] = ()

_HEADER = re.compile(r"^(\w[\w ]*)\n-{3,}\s*$", re.MULTILINE)


def sections(doc: str) -> dict[str, str]:
    """Split a cleaned numpydoc docstring into ``{section title: body}``."""
    found = {}
    headers = list(_HEADER.finditer(doc))
    for i, match in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(doc)
        found[match.group(1).strip()] = doc[match.end() : end]
    return found


def documented_names(body: str) -> set[str]:
    """The parameter names a ``Parameters`` section lists (``a, b : int`` names both)."""
    names = set()
    for line in body.splitlines():
        if not line or line[0].isspace():
            continue
        for name in line.split(" : ")[0].split(","):
            names.add(name.strip())
    return names


def _accepted(param: inspect.Parameter) -> set[str]:
    """How a parameter may be spelled in the ``Parameters`` section."""
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
        return {f"*{param.name}", "*args"}
    if param.kind is inspect.Parameter.VAR_KEYWORD:
        return {f"**{param.name}", "**kwargs"}
    return {param.name}


def problems(function, doc: str | None, *, check_returns: bool = True) -> list[str]:
    """What ``doc`` lacks as the numpydoc docstring of ``function``."""
    if not doc:
        return ["no docstring"]
    signature = inspect.signature(function)
    params = [p for name, p in signature.parameters.items() if name not in ("self", "cls")]
    parts = sections(doc)
    found = []
    if params:
        if "Parameters" not in parts:
            found.append(f"no Parameters section (takes {', '.join(p.name for p in params)})")
        else:
            listed = documented_names(parts["Parameters"])
            missing = [p.name for p in params if not (_accepted(p) & listed)]
            if missing:
                found.append(f"Parameters does not name {', '.join(missing)}")
    returns = signature.return_annotation
    if returns is inspect.Signature.empty:
        returns = "an unannotated value"  # annotate ``-> None`` if it returns nothing
    if (
        check_returns
        and returns not in (None, "None")
        and not ({"Returns", "Yields"} & parts.keys())
    ):
        found.append(f"no Returns section (returns {returns})")
    return found


def _excluded(qualname: str, obj) -> bool:
    if qualname in EXCLUDED:
        return True
    try:
        source = inspect.getsourcefile(obj) or ""
    except TypeError:
        return False
    return source.replace("\\", "/").endswith(EXCLUDED_FILES)


def _methods(cls):
    """``(name, function)`` for the public methods of ``cls`` and its project bases."""
    seen = set()
    for base in cls.__mro__:
        if base.__module__.split(".")[0] not in PROJECT:
            continue
        for name, value in vars(base).items():
            if name in seen or (name.startswith("_") and name not in ("__init__", "__call__")):
                continue
            seen.add(name)
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            # skip what the class machinery adds (``typing.Protocol``'s ``__init__``)
            if inspect.isfunction(value) and value.__module__.split(".")[0] in PROJECT:
                yield name, value


def public_names():
    """``(qualified name, object)`` for every function and class in the packages' ``__all__``."""
    seen = set()
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and id(obj) not in seen:
                seen.add(id(obj))
                yield f"{package}.{name}", obj


def name_problems(qualname: str, obj) -> list[str]:
    """What the docstrings of one public function or class (and its methods) lack."""
    if inspect.isfunction(obj):
        return [f"{qualname}: {p}" for p in problems(obj, inspect.getdoc(obj))]
    found = []
    if not inspect.getdoc(obj):
        found.append(f"{qualname}: no docstring")
    for name, method in _methods(obj):
        if name == "__init__":
            if getattr(obj, "__dataclass_fields__", None):
                continue
            # documented by the class that defines it (a subclass may inherit it)
            owner = next(base for base in obj.__mro__ if "__init__" in vars(base))
            own = inspect.cleandoc(method.__doc__ or "")
            doc = own if "Parameters" in sections(own) else inspect.getdoc(owner)
            found += [f"{qualname}(): {p}" for p in problems(method, doc, check_returns=False)]
        else:
            doc = inspect.getdoc(getattr(obj, name))
            found += [f"{qualname}.{name}: {p}" for p in problems(method, doc)]
    return found


def undocumented() -> list[str]:
    """Every public name whose docstring falls short, as ``name: what is missing``."""
    found = []
    for qualname, obj in public_names():
        if not _excluded(qualname, obj):
            found += name_problems(qualname, obj)
    return found


def test_every_public_name_has_a_numpydoc_docstring():
    found = undocumented()
    assert not found, f"{len(found)} public names lack numpydoc sections:\n" + "\n".join(found)


def test_the_check_sees_a_missing_section():
    def bare(a: int, *rest: int, **options: str) -> int:
        """Add things."""

    def full(a: int, *rest: int, **options: str) -> int:
        """Add things.

        Parameters
        ----------
        a : int
            First.
        *rest : int
            More.
        **options : str
            Flags.

        Returns
        -------
        int
            The sum.
        """

    assert problems(bare, inspect.getdoc(bare)) == [
        "no Parameters section (takes a, rest, options)",
        "no Returns section (returns int)",
    ]
    assert problems(full, inspect.getdoc(full)) == []
    partial = inspect.getdoc(full).replace("*rest : int", "other : int")
    assert problems(full, partial) == ["Parameters does not name rest"]
    assert problems(full, None) == ["no docstring"]
    kwargs_as_name = inspect.getdoc(full).replace("**options : str", "options : str")
    assert problems(full, kwargs_as_name) == ["Parameters does not name options"]

    def untyped(a):
        """Double ``a``.

        Parameters
        ----------
        a : int
            The number.
        """

    assert problems(untyped, inspect.getdoc(untyped)) == [
        "no Returns section (returns an unannotated value)"
    ]


@pytest.mark.parametrize("name", sorted(EXCLUDED))
def test_exclusions_are_still_needed(name):
    package, _, attr = name.rpartition(".")
    module = importlib.import_module(package)
    assert hasattr(module, attr), f"{name} is gone; drop it from EXCLUDED"
    assert name_problems(name, getattr(module, attr)), (
        f"{name} is documented now; drop it from EXCLUDED"
    )
