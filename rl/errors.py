"""Errors that experiment entry points turn into one clear message and a non-zero exit."""


class ConfigError(ValueError):
    """An invalid configuration or input, raised before anything is compiled or written."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class RunError(RuntimeError):
    """A run that cannot continue (non-finite loss, unreadable checkpoint, existing run dir)."""
