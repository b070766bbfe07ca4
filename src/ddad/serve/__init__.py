"""REST service and browser page: `ddad serve --model DIR`."""
from .app import ServeLimits, create_app

__all__ = ["ServeLimits", "create_app"]
