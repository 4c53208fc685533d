"""Monitoring: Prometheus metrics (``metrics``); drift and alerts come later."""
