"""commands/ imports run one way: kernel <- pg, storage <- chat <- operations <- dispatch, schedules.

The graph is read from the source with `ast` (every import, including those inside functions),
so a loop cannot hide in a function body and a new module cannot reach upwards unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ROOT / "commands"

# The kernel: its modules, and its packages with every module in them (commands.settings: a module per TOML section).
KERNEL = {"commands.settings", "commands.errors", "commands.redact", "commands.units", "commands.signing"}
SETTINGS_MAY_IMPORT = {"commands.errors", "commands.signing"}
LAYERS = [("kernel", 0), ("pg", 1), ("storage", 1), ("chat", 2), ("backup", 3), ("restore", 3), ("health", 3),
          ("incident", 3), ("dispatch", 4), ("schedules", 4)]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in COMMANDS.rglob("*.py")}


def imports_of(path: Path, known: set[str], packages: tuple[str, ...] = ("commands",)) -> set[str]:
    """Every module of `packages` this file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in packages:
                while name not in known and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in known:
                    found.add(name)
    return found


def layer_of(module: str) -> tuple[str, int]:
    if module == "commands" or any(module == k or module.startswith(k + ".") for k in KERNEL):
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


def test_the_settings_package_imports_nothing_else_of_commands_but_errors_and_signing():
    wrong = [f"{m} imports {t}" for m, ts in graph().items() if m.startswith("commands.settings")
             for t in ts if not t.startswith("commands.settings") and t not in SETTINGS_MAY_IMPORT]
    assert not wrong, "\n".join(sorted(wrong))


def find_cycles(edges: dict[str, set[str]]) -> list[str]:
    """Every import loop in `edges`, each as `a -> b -> a`."""
    state: dict[str, int] = {}
    cycles: list[str] = []

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
    return cycles


def test_there_is_no_import_cycle():
    cycles = find_cycles(graph())
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


# ---------------------------------------------------------------- every package: bot/, commands/, state/

PACKAGES = ("bot", "commands", "state")
# state/ is the one place that touches SQLite; it may use only commands' leaf kernel, so the core can import
# it from any layer without a cycle. (Settings, signing and storage are passed in, never imported.)
STATE_MAY_IMPORT = {"commands.errors", "commands.redact", "commands.units"}
# bot/ adapts, in this order (each may import only those before it): leaves, then what wires them together.
BOT_LAYERS = {
    "bot": 0, "bot.logs": 0, "bot.blocks": 0, "bot.slack_messages": 0, "bot.usergroups": 0, "bot.init": 0,
    "bot.init_pgbackrest": 0, "bot.recovery": 0, "bot.scheduler": 0, "bot.ops_metrics": 0, "bot.health_checks": 0,
    "bot.ack_first": 0,
    "bot.slack_reply": 1, "bot.startup": 1,
    "bot.app": 2, "bot.checkpoint": 2, "bot.shutdown": 2,
    "bot.server": 3,
    "bot.preflight": 4,
    "bot.console": 5,
    "bot.cli": 6,  # the entry point: nothing imports it
}


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def whole_graph() -> dict[str, set[str]]:
    mods = all_modules()
    return {name: imports_of(path, set(mods), PACKAGES) - {name} for name, path in mods.items()}


def test_state_depends_only_on_the_leaf_kernel():
    wrong = [f"{m} imports {t}" for m, ts in whole_graph().items() if m.startswith("state")
             for t in ts if t.startswith(("commands", "bot")) and t not in STATE_MAY_IMPORT]
    assert not wrong, "state/ reaches above commands' leaf kernel:\n" + "\n".join(sorted(wrong))


def test_nothing_below_the_adapters_imports_bot():
    wrong = [f"{m} imports {t}" for m, ts in whole_graph().items() if not m.startswith("bot")
             for t in ts if t.startswith("bot")]
    assert not wrong, "\n".join(sorted(wrong))


def test_bot_modules_import_down_their_order():
    edges = whole_graph()
    unknown = sorted(m for m in edges if m.startswith("bot") and m not in BOT_LAYERS)
    assert not unknown, f"bot modules outside BOT_LAYERS (add them where they sit): {unknown}"
    wrong = [f"{m} ({BOT_LAYERS[m]}) imports {t} ({BOT_LAYERS[t]})" for m, ts in edges.items() if m.startswith("bot")
             for t in ts if t.startswith("bot") and BOT_LAYERS[t] >= BOT_LAYERS[m] and t != "bot"]
    assert not wrong, "bot/ imports against its order:\n" + "\n".join(sorted(wrong))


def test_no_cycle_across_all_packages():
    cycles = find_cycles(whole_graph())
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
