"""The README's examples run, in order, in one namespace: the README cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(python_blocks()) >= 6


def test_readme_examples_run() -> None:
    namespace: dict[str, object] = {"__name__": "readme"}
    for i, block in enumerate(python_blocks()):
        code = compile(block, f"README.md[python block {i}]", "exec")
        exec(code, namespace)
