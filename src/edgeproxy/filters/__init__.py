"""Edge filters: what a client may see of an object."""
