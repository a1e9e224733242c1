"""Patron features."""
