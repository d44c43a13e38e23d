"""Routing and handlers: pass-through, local serving, offline answers."""
