"""inferplane's OpenAI-compatible model server (``inferplane serve``)."""
