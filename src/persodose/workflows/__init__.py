"""End-to-end workflows built from the package's pure functions."""
