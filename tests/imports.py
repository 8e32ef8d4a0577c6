"""What a module imports, read from its source: the layer tests of bootstrap/ and components/settings/ use it."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module the file at ``path`` (in ``package``) imports, as dotted names, those inside functions too.

    ``from <package> import x`` and ``from . import x`` give ``<package>.x``, ``from .x import y`` gives
    ``<package>.x``, so a sibling is named the same way however it is imported.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.level or node.module == package):
            found |= {f"{package}.{node.module or alias.name}" if node.level else f"{package}.{alias.name}"
                      for alias in node.names}  # fmt: skip
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found
