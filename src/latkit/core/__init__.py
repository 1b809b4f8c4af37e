"""latkit's base layer: the error tree, the plug-in registry, atomic file writes and
where caches live. It imports no other latkit layer."""
