"""Worked solutions to the exercises."""
