"""The one place where stack configuration is declared and checked.

Split the way kind splits its config (types/defaults/validate/load), each module
importing only the ones before it:

- ``rules``: one key's value on its own (a parser and the words for what is allowed);
- ``declarations``: each key declared once as a field of :class:`ClusterSettings`
  (name, default, rule, documentation), and the constants other modules share;
- ``validate``: checks across keys and :func:`validate`, which raises one
  :class:`SettingsError` naming every problem before anything is registered;
- ``load``: :func:`load_settings`, the only code that reads ``pulumi.Config``;
- ``reference``: docs/config.md's table and Pulumi.yaml's config block, derived from
  the declarations (``venv/bin/python -m components.settings`` rewrites both).

The names below are the package's interface; the rest of the program imports them from here.
"""

from components.settings.declarations import (
    BACKUP_USER,
    DEFAULTS,
    EXPORTER_USER,
    EXPORTER_VERSION,
    KEYS,
    MAX_NAME_LEN,
    NAMESPACE,
    SECRET_KEYS,
    ClusterSettings,
    SecretValue,
)
from components.settings.load import load_settings
from components.settings.reference import pulumi_config, with_config_block, with_reference
from components.settings.rules import BACKUP_NAME, parse_quantity
from components.settings.validate import SettingsError, validate

__all__ = [
    "BACKUP_NAME",
    "BACKUP_USER",
    "DEFAULTS",
    "EXPORTER_USER",
    "EXPORTER_VERSION",
    "KEYS",
    "MAX_NAME_LEN",
    "NAMESPACE",
    "SECRET_KEYS",
    "ClusterSettings",
    "SecretValue",
    "SettingsError",
    "load_settings",
    "parse_quantity",
    "pulumi_config",
    "validate",
    "with_config_block",
    "with_reference",
]
