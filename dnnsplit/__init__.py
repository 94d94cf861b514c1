"""dnnsplit: prepare vision models for collaborative inference across mobile web, edge and cloud."""

__version__ = "0.1.0"
