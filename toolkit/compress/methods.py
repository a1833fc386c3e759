"""Imports every compression method module so that its register() call runs."""
