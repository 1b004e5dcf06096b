"""Applications that embed tuswsgi, served for real by tests/test_embedding.py."""
