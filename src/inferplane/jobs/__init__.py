"""Batch and async inference: the OpenAI Batch API and a queue-fed async processor.

Both send their requests through the gateway as sheddable filler traffic, so they use only the
capacity real-time traffic leaves free.
"""
