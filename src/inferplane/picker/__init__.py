"""The endpoint picker: a Gateway API Inference Extension EPP speaking Envoy ``ext_proc``.

Envoy sends each inference request here; the picker parses the OpenAI body, scores the pool's
endpoints on their scraped vLLM metrics, and tells Envoy where to send the request in the
``x-gateway-destination-endpoint`` header.
"""
