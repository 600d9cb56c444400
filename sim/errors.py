"""The one exception raised for input that cannot be accepted."""

from __future__ import annotations


def _one_line(text: str) -> str:
    """Escape line breaks and other unprintable characters, so the text stays on one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class ScenarioError(ValueError):
    """A scenario file, override or flag that cannot be accepted; str() is one line."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)
        self.path = path
        """Dotted key path, e.g. "tier.edge.nodes", or "--set KEY" or "scenario file"."""
        self.message = message
        """What was given and what is accepted."""

    def __str__(self) -> str:
        return _one_line(f"{self.path}: {self.message}")
