"""API keys, tenants and rate limits, enforced at the gateway by an Envoy ext_authz gRPC service."""
