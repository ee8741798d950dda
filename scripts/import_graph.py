#!/usr/bin/env python3
"""Print each service's internal import graph (which module imports which) and its lines of code.

    python scripts/import_graph.py [REPO]      # REPO defaults to this checkout

For every ``services/<name>/zehanx_<name>/`` package: one line per module that imports other modules
of the same package, ``module -> imported, ...`` (imports inside functions count too; the generated
programs under ``templates/`` and the runtime helpers shipped into the sandbox are not the service's
code and are left out). Then the lines of Python per service: all lines, and code lines (neither blank
nor a comment). Reads files only; imports nothing.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

#: Folders of program text the services ship to the sandbox, not modules of the service itself.
SHIPPED = {"templates", "zxrt_runtime", "predictor_runtime"}


def modules(package: Path) -> dict[str, Path]:
    """Dotted module name (relative to the package) → file."""
    found: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if SHIPPED & set(rel.parts[:-1]) or "__pycache__" in rel.parts:
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts) or "__init__"] = path
    return found


def imports(path: Path, package_name: str, module: str, known: set[str]) -> set[str]:
    """The package's own modules that ``module`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module.split(".")[:-1] if not path.name == "__init__.py" else module.split(".")
    out: set[str] = set()

    def add(dotted: str) -> None:
        # the longest known module that the dotted name starts with
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in known:
                if candidate != module:
                    out.add(candidate)
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(package_name + "."):
                    add(alias.name[len(package_name) + 1 :])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                prefix = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module == package_name:
                prefix = ""
            elif node.module and node.module.startswith(package_name + "."):
                prefix = node.module[len(package_name) + 1 :]
            else:
                continue
            for alias in node.names:
                add(f"{prefix}.{alias.name}" if prefix else alias.name)
                if prefix:
                    add(prefix)
    return out


def lines(paths: list[Path]) -> tuple[int, int]:
    total = code = 0
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            total += 1
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                code += 1
    return total, code


def main() -> None:
    repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    summary = []
    for service in sorted((repo / "services").iterdir()):
        package = service / f"zehanx_{service.name}"
        if not package.is_dir():
            continue
        mods = modules(package)
        known = set(mods)
        edges = {m: sorted(imports(p, package.name, m, known)) for m, p in mods.items()}
        count = sum(len(v) for v in edges.values())
        print(f"## {service.name}: {len(mods)} modules, {count} imports between them")
        for module, targets in sorted(edges.items()):
            if targets:
                print(f"  {module} -> {', '.join(targets)}")
        summary.append((service.name, len(mods), *lines(list(mods.values()))))
    print("\n## lines of Python per service (modules above; shipped program text left out)")
    print(f"  {'service':<10} {'modules':>7} {'lines':>7} {'code':>7}")
    for name, n, total, code in summary:
        print(f"  {name:<10} {n:>7} {total:>7} {code:>7}")
    print(f"  {'all':<10} {sum(s[1] for s in summary):>7} {sum(s[2] for s in summary):>7} "
          f"{sum(s[3] for s in summary):>7}")  # fmt: skip


if __name__ == "__main__":
    main()
