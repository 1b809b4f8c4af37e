"""The loopback ADB device: a phone stand-in that speaks the real ADB protocol."""
