"""Experimental projects built on ctvis (see README.md); importable from the repository root."""
