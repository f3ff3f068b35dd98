"""dtma: a per-host agent for health-gated, auto-reverting toolboxes of MCP server containers."""

__version__ = "0.1.0"
