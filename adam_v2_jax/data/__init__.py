"""Host-side data: sources, the phantom, hierarchical sampling and the grain pipeline (numpy only)."""
