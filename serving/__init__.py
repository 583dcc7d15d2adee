"""Serving API for the registered diabetes risk model (see serving/app.py)."""
