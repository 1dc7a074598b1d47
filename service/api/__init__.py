"""The HTTP API: ``create_app(settings, store)`` builds the FastAPI application."""

from service.api._app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
