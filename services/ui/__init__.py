"""The web page at /ui: sign in with an API key, submit jobs, watch them live, follow batches, review moderation."""
