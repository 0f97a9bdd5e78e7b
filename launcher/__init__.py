"""Command-line side of Clutch: the gateway commands (`./clutch start|web|env`) and `xx`, the launcher."""
