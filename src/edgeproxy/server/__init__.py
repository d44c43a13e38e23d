"""HTTP front: the client listener and the admin listener."""
