"""Pictures people would rather look at than read: training curves, overlays, attention maps."""
