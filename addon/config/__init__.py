"""The config layer: rules.yaml -> frozen specs, one module per section. Imports nothing from the
runtime (an import-linter contract in pyproject.toml keeps it so).
"""
