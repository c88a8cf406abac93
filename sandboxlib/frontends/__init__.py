"""Front ends over the public API: the command line, the IPython magics, the pytest plugin."""
