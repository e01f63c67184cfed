"""lfsearch.evaluation."""
