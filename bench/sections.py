"""bench/results.md and the README's Benchmarks section hold one block per bench script.

Each block sits between `<!-- NAME:begin -->` and `<!-- NAME:end -->`. A script replaces its own
block and leaves the others alone; a block that is not there yet is appended (results.md) or put
at the end of the README's "## Benchmarks" section.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.md"
README = ROOT / "README.md"


def _replace_block(text: str, name: str, body: str) -> str | None:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        return None
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{body.strip()}\n{end}{rest.split(end, 1)[1]}"


def write_results(name: str, body: str, path: Path = RESULTS) -> None:
    """Put `body` into results.md as block `name`, keeping every other block."""
    text = path.read_text() if path.exists() else ""
    replaced = _replace_block(text, name, body)
    if replaced is None:
        replaced = text.rstrip("\n") + ("\n\n" if text.strip() else "") + \
            f"<!-- {name}:begin -->\n{body.strip()}\n<!-- {name}:end -->\n"
    path.write_text(replaced)


def quote_in_readme(name: str, body: str, path: Path = README) -> None:
    """Copy `body` (without its `# ` title and its Rerun line) into the README's block `name`.
    Only a block already in the README is replaced: the prose around it is written by hand."""
    text = path.read_text()
    quoted = "\n".join(line for line in body.splitlines()
                       if not line.startswith(("# ", "## ")) and not line.startswith("Rerun:")).strip()
    replaced = _replace_block(text, name, quoted)
    if replaced is not None:
        path.write_text(replaced)
