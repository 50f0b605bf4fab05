"""Experiment profiles shipped with the package (``study.paths.profile_path``)."""
