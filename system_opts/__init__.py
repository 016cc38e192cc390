"""System-level optimisations: flattened execution plan, planned static arena, lazy weight loading."""
