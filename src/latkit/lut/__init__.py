"""lut subsystem."""
