"""lfsearch: automated loss-function search for deep face recognition and metric learning."""

__version__ = "0.1.0"
