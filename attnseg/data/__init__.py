"""Medical image data: geometry-aware I/O, dataset layouts and checks, plans, preprocessing, sampling."""
