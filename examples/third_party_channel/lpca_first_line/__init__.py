"""Example third-party LPCA channel."""
