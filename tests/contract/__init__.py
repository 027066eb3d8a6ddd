"""Reusable contract suites: behaviour that every implementation of an interface must show."""
