"""Patron experiments."""
