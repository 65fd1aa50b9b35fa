"""Tracing, metrics and logs: built in app.py, one instance per App (no global state)."""
