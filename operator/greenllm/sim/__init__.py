"""Trace-replay simulator that drives the same decision step as the operator."""
