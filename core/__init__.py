"""audio-cnn core library: signal chain, model, inference, server and client.

Nothing in this package imports Streamlit or Modal; the dashboard pages and
the Modal apps are thin shells over it.
"""
