"""Patron models."""
