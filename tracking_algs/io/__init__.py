"""Event input/output."""
