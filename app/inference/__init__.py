"""Inference server: serves a merged Gemma model over the team API, OpenAI and Gemini APIs."""
