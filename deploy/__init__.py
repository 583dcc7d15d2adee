"""Deployment helpers for Render: the MLflow tracking-server launcher."""
