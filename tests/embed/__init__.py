"""Applications that embed tuswsgi, served for real by tests/server/test_embedding.py."""
