"""Optin's ServerApp: a consent-aware FedAvg over Flower's Message API."""
