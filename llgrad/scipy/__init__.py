"""scipy's functions on traced arrays: ``from llgrad.scipy import special``."""
