"""The toolkit's version, recorded in every file latkit saves."""

__version__ = "0.1.0"
