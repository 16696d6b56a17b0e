"""The body-based router: an Envoy ext_proc service choosing the pool by the model a request names."""
