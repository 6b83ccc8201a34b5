"""Private package; see trainhooks/__init__.py for the public API."""
