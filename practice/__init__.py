"""Exercises: python -m practice DIR writes them; practice.loader and practice.grading
grade them (see practice.exercises)."""
