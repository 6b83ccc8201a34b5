"""Private package: one adapter per array framework (see ``_base.ArrayAdapter``)."""
