"""Example feature files used by the tests (``features.py`` is the seed-shaped one)."""
