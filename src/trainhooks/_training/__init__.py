"""Private package; see trainhooks/__init__.py for the public API.

The top layer beside listeners and the CLI: ``MonitoredTrainingSession``, which assembles
a session from the standard hooks.
"""
