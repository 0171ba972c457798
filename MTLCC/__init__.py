"""MTLCC experiment scripts (run from the repository root)."""
