"""Patron training."""
