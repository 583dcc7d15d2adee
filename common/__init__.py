"""Small helpers shared by pipeline/, serving/ and ui/ (no training code)."""
