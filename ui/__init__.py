"""Clinicians' Streamlit app: reads the MLflow registry and calls the serving API (never loads the model)."""
