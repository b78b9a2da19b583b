"""Compatibility fixes for the pinned stack (placeholder, filled in by the compat work)."""
