"""ipywidgets front ends (imported only when a dashboard is made)."""
