"""The hybrid pipeline that composes model-centric and system-level steps (`python -m hybrid.run`)."""
