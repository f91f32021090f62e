"""zoo layer (see DESIGN.md)."""
