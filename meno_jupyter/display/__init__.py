"""Rendering shared by the magics and widgets: plotly figures, HTML and text tables.

Nothing here imports IPython; plotly is imported only by the figure builders.
"""
