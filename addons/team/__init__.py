"""A team gateway's shared servers: the link to the Redis that every replica shares."""
