"""The launchers' one error type: what `hccr-launch` reports as one line, exit status 2."""
from __future__ import annotations


class LaunchError(ValueError):
    """A problem with the launcher's flags or environment: one line, exit status 2."""
