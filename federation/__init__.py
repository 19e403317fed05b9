"""A real vantage6 federation on this machine, end to end: see harness.py."""
