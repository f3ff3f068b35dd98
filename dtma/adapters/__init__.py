"""Adapters: the only modules that import docker, hvac, mcp transports or sqlite3."""
