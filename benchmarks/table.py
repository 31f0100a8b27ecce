"""The tail every benchmark shares: a markdown table, written to benchmarks/results/ and printed."""

from pathlib import Path


def markdown(columns: list[str], rows: list[str]) -> list[str]:
    """The header, the separator and the rows of a markdown table with these column names."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *rows]


def publish(path: Path, lines: list[str], echo: bool = True) -> str:
    """Write the lines to `path` (its folder made if need be), print them unless `echo` is false (a table
    rewritten after every row), and return them as one text."""
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    if echo:
        print(text)
    return text
