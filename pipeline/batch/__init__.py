"""Streaming batch scoring with the registered model: in-process (Arrow record batches) or on Spark."""
