"""Test setup: make the repository's ``examples`` package (the example
feature files users read in the README) importable whatever pytest's import
mode."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
