"""The durable journal: the cache on disk, so the proxy answers after a restart offline."""
