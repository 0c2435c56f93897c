"""Shared test helpers: tiny networks, face crops, oracles, CUDA stand-ins."""
