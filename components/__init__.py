"""Typed Pulumi components, one cloud concern per module."""
