"""lfsearch.experiments."""
