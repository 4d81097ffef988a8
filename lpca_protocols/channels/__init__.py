"""Built-in channels, one file each; `builtin` registers them through the plugin hook."""
