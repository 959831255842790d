"""Talking to Docker/OCI registries: transport and auth, the pull side, the push side."""
