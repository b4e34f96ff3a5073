"""Import a script of the repository's ``tools/`` folder as a module (the demo and the tests drive the tools
in-process)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

TOOLS_DIR = Path(__file__).resolve().parents[3] / 'tools'


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as a fresh module named ``tool_<name>``."""
    path = TOOLS_DIR / f'{name}.py'
    if not path.is_file():
        raise FileNotFoundError(f'no tool {name!r}: {path} does not exist')
    spec = importlib.util.spec_from_file_location(f'tool_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
