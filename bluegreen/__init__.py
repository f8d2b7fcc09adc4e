"""bluegreen: zero-downtime blue/green rollouts for HTTP applications on PostgreSQL."""

__version__ = "0.1.0"
