"""Reading a training config file: YAML whose top level is a mapping of settings. Light (yaml
only), so the CLI can refuse a damaged config before torch and the models load; the settings
themselves are checked by `refseg.train.config.load_config`."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from refseg.errors import ConfigError


def read_config_file(path: str | os.PathLike[str]) -> dict:
    """The settings of a YAML config file; a missing, unreadable or non-mapping file raises
    `ConfigError` naming it (with the line and column of a YAML syntax error)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at} ({getattr(err, 'problem', None) or err})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a YAML config is expected)") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (task: ..., steps: ...), got a "
                          f"{type(values).__name__}")
    return values
