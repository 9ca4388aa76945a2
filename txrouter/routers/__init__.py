"""Client-facing protocols, one module per router."""
