"""Deployment: certificates and keys, the loopback process launcher, container files."""
