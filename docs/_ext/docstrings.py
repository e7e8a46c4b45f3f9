"""Griffe extensions for the docs build (mkdocs.yml loads every extension class of this file).

The provider's docstrings are Sphinx style, read by mkdocstrings' ``docstring_style: sphinx``:

- ``SphinxRoles``: roles such as ``:class:`~pkg.mod.Name``` or ``:meth:`name``` become inline code.
  Markdown has no roles, so without this they would render literally (``:class:`` followed by code).
- ``KwargsParams``: Airflow operators document parameters they pass on through ``**kwargs`` (a base
  class's ``timeout``, a shared base's ``destination``...). Griffe cannot match those ``:param:`` lines to
  the signature and warns, which fails ``mkdocs build --strict``. These two warnings are dropped for
  objects whose signature takes ``**kwargs``, and kept everywhere else, so a stale or misspelled
  ``:param:`` of any other function still fails the build.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|exc|data|obj|const):`(~?)([^`]+)`")
UNMATCHED = re.compile(r"([^\s:]+\.py):(\d+): (?:Parameter '[^']+' does not appear in the function signature"
                       r"|No matching parameter for '[^']+')")


def _code(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2).strip()
    if short:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx cross-reference roles in every docstring once the object tree is built."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Replace the roles in this object's docstring, if it has one."""
        if obj.is_alias:
            return
        if obj.docstring is not None and ":`" in obj.docstring.value:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)


class _KwargsFilter(logging.Filter):
    """Drops griffe's unmatched-parameter warnings for the docstrings listed in ``where``."""

    def __init__(self) -> None:
        super().__init__()
        self.where: set[tuple[str, int]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        match = UNMATCHED.search(record.getMessage())
        return not (match and (match.group(1), int(match.group(2))) in self.where)


_FILTER = _KwargsFilter()
# mkdocstrings routes griffe's logger to "mkdocs.plugins.griffe"; plain griffe logs to "griffe".
for _name in ("griffe", "mkdocs.plugins.griffe"):
    if _FILTER not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_FILTER)


class KwargsParams(griffe.Extension):
    """Record the docstrings of classes and functions whose signature takes ``**kwargs``."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Remember where this object's docstring is, when its parameters include ``**kwargs``."""
        if obj.is_alias or obj.docstring is None:
            return
        signature = obj.members.get("__init__") if obj.is_class else obj if obj.is_function else None
        if signature is None or signature.is_alias:
            return
        if any(p.kind is griffe.ParameterKind.var_keyword for p in signature.parameters):
            try:
                path = str(obj.relative_filepath)
            except ValueError:
                return
            _FILTER.where.add((path, obj.docstring.lineno or 0))
