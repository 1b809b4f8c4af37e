"""Profiler: enumerate a space's operators, build them, and measure them soundly."""
