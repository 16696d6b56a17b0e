"""Kubernetes deployment: the values model, the manifests it renders, and ``inferplane render``."""
