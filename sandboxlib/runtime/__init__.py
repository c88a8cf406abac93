"""Containers: spawn and lifecycle, commands and processes, state records, files and commit."""
