"""search subsystem."""
