"""The tutorial: chapters (*.md), the exercise checker (check.py), worked solutions and known wrong answers."""
