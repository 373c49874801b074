"""Errors that experiment entry points turn into one clear message and a non-zero exit."""


class ConfigError(ValueError):
    """An invalid configuration or input, raised before anything is compiled or written."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class RunError(RuntimeError):
    """A run that cannot continue (non-finite loss, unreadable checkpoint, existing run dir)."""


def parse_settings(text: str, field: str) -> tuple[str, dict[str, str]]:
    """Split ``"name:key=value,key=value"`` into ``name`` and its settings (values as text); a
    malformed or repeated setting raises ``ConfigError`` naming ``field``."""
    name, _, listed = text.partition(":")
    settings: dict[str, str] = {}
    for item in filter(None, listed.split(",")):
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not key or not value or key in settings:
            raise ConfigError(field, f"{item!r} in {text!r} is not a key=value setting (each key once)")
        settings[key] = value
    return name, settings
