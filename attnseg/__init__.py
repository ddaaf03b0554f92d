"""attnseg: attention models for medical image segmentation."""

from attnseg import hooks as _hooks

__version__ = "0.1.0"

_hooks.beat()  # ATTNSEG_HEARTBEAT: the process has started (a no-op without it)
