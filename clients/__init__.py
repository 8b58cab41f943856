"""Optin's ClientApp: the workspace node that answers consent and trains with DP-SGD."""
