"""Patron serving."""
