"""Hybrid chat app: Gemma and Gemini in one streaming Gradio UI, every conversation in Firestore."""
