"""commands/ imports run one way: kernel <- pg, storage <- chat <- operations <- dispatch, schedules.

The graph is read from the source with `ast` (every import, including those inside functions),
so a loop cannot hide in a function body and a new module cannot reach upwards unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ROOT / "commands"

KERNEL = {"commands.settings_targets", "commands.settings", "commands.errors", "commands.redact", "commands.units",
          "commands.settings_health", "commands.settings_incidents", "commands.settings_retention",
          "commands.settings_schedules", "commands.signing"}
LAYERS = [("kernel", 0), ("pg", 1), ("storage", 1), ("chat", 2), ("backup", 3), ("restore", 3), ("health", 3),
          ("incident", 3), ("dispatch", 4), ("schedules", 4)]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in COMMANDS.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every commands.* module this file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("commands"):
                while name not in known and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in known:
                    found.add(name)
    return found


def layer_of(module: str) -> tuple[str, int]:
    if module in KERNEL or module == "commands":
        return "kernel", 0
    top = module.split(".")[1]
    for room, level in LAYERS:
        if room == top:
            return room, level
    raise AssertionError(f"{module} is in no room of the layout: add it to a package (see README, Layout)")


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) - {name} for name, path in mods.items()}


def test_every_import_runs_down_the_layers():
    wrong = []
    for module, targets in graph().items():
        room, level = layer_of(module)
        for target in targets:
            target_room, target_level = layer_of(target)
            if target_level > level and not target.startswith(module + "."):
                wrong.append(f"{module} ({room}) imports {target} ({target_room})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_there_is_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]) if target in path else target)
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_operations_do_not_import_each_other_in_a_loop():
    rooms: dict[str, set[str]] = {}
    for module, targets in graph().items():
        room, level = layer_of(module)
        if level == 3:
            rooms.setdefault(room, set()).update(layer_of(t)[0] for t in targets if layer_of(t)[1] == 3)
    for room, uses in rooms.items():
        for other in uses - {room}:
            assert room not in rooms.get(other, set()), f"{room} and {other} import each other"


def test_the_core_knows_nothing_of_slack():
    for path in COMMANDS.rglob("*.py"):
        names = imports_of_any(path)
        assert not {n for n in names if n.split(".")[0] in ("slack_sdk", "slack_bolt", "bot")}, path


def imports_of_any(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names
