"""The pure measuring library: no IPython, ipywidgets or jupyter_server imports here."""
