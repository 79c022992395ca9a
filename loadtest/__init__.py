"""Locust scenarios, load shapes and SLO reporting for passcode (see README.md here)."""
