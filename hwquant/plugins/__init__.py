"""Plugin layer: hook specifications, the built-in plugin, and the registry of what plugins contribute."""
