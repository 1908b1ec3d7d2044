"""YAML recipes: the paper's runs, each headed by the exact command that runs it.

A recipe is a mapping of :class:`~oat.train.config.TrainConfig` keys; ``oat train
--recipe NAME key=value ...`` applies flags and overrides on top, validated together.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from oat.errors import ConfigError


def _recipe_files() -> dict[str, Path]:
    root = resources.files("oat.recipes")
    return {Path(str(f)).stem: Path(str(f)) for f in root.iterdir() if str(f).endswith(".yaml")}


def list_recipes() -> list[tuple[str, str]]:
    """``(name, command)`` for each bundled recipe; the command is its first comment line."""
    out = []
    for name, f in sorted(_recipe_files().items()):
        first = f.read_text().splitlines()[0] if f.read_text() else ""
        out.append((name, first.lstrip("# ").strip()))
    return out


def recipe_text(name: str) -> str:
    return _find(name).read_text()


def _find(name: str) -> Path:
    files = _recipe_files()
    if name in files:
        return files[name]
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(sorted(files)) or 'none'}")


def load_recipe(name: str) -> dict:
    """A recipe's mapping (by bundled name or YAML path)."""
    f = _find(name)
    try:
        doc = yaml.safe_load(f.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {f} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"recipe {f} must be a mapping of config keys")
    return doc
