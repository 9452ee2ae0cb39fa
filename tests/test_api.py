"""The public API is what docs/api.md documents: each public module's `__all__`, exactly.

As httpx's test_exported_members does: a name exported without documentation, or documented
without being exported, fails here. A module is public when it has an `__all__`; internal
modules have none.
"""

from __future__ import annotations

import importlib
import pathlib
import pkgutil
import re
import types

import pytest

import abadges

API_PAGE = pathlib.Path(__file__).parent.parent / "docs" / "api.md"
PUBLIC_MODULES = [
    "abadges",
    "abadges.base",
    "abadges.config",
    "abadges.exceptions",
    "abadges.integrations.aiohttp",
    "abadges.integrations.quart",
    "abadges.integrations.starlette",
    "abadges.openbadges",
    "abadges.openbadges.settings",
    "abadges.tables",
    "abadges.testing",
    "abadges.worker",
]
#: Documented in prose on the page, as httpx leaves `__version__` out of its reference.
UNDOCUMENTED = {"abadges": {"__version__"}}


def package_modules() -> list[str]:
    names = ["abadges"]
    for info in pkgutil.walk_packages(abadges.__path__, "abadges."):
        names.append(info.name)
    return names


def documented() -> set[str]:
    """The dotted paths that the `:::` directives of the API page render."""
    paths: set[str] = set()
    text = API_PAGE.read_text()
    for match in re.finditer(r"^::: (\S+)\n((?:    .*\n)*)", text, re.MULTILINE):
        path, options = match.group(1), match.group(2)
        try:
            module = importlib.import_module(path)
        except ModuleNotFoundError:
            paths.add(path)
            continue
        members = re.findall(r"^        - (\w+)$", options, re.MULTILINE)
        paths.update(f"{path}.{name}" for name in members or module.__all__)
    return paths


def resolve(path: str) -> object:
    module_name, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def is_documented(module_name: str, name: str, paths: set[str]) -> bool:
    """Is `module.name` rendered, under its own path or, for an object that has an identity of
    its own (a class, a function, the default registry), under another public path?"""
    if f"{module_name}.{name}" in paths:
        return True
    value = getattr(importlib.import_module(module_name), name)
    if isinstance(value, int | str | tuple):
        return False
    return any(resolve(path) is value for path in paths)


def test_public_modules_are_those_with_an_all() -> None:
    with_all = [
        name for name in package_modules() if hasattr(importlib.import_module(name), "__all__")
    ]
    assert sorted(with_all) == PUBLIC_MODULES


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_exported_name_is_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    paths = documented()
    undocumented = [
        name
        for name in module.__all__
        if name not in UNDOCUMENTED.get(module_name, set())
        and not is_documented(module_name, name, paths)
    ]
    assert undocumented == []
    assert list(module.__all__) == sorted(module.__all__)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_exported_name_exists_and_says_what_it_is(module_name: str) -> None:
    module = importlib.import_module(module_name)
    for name in module.__all__:
        value = getattr(module, name)
        if isinstance(value, type | types.FunctionType):
            assert value.__doc__, f"{module_name}.{name} has no docstring"


def test_the_api_page_documents_nothing_else() -> None:
    # Every directive renders a name that a public module exports.
    for path in sorted(documented()):
        module_name, _, name = path.rpartition(".")
        assert module_name in PUBLIC_MODULES, path
        assert name in importlib.import_module(module_name).__all__, path
