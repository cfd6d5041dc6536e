"""The dashboard: read-only pages served by the gateway's own app (see docs/dashboard.md)."""

from __future__ import annotations

from .app import dashboard_routes

__all__ = ["dashboard_routes"]
