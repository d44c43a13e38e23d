"""One module per suite; each exposes NAME, TITLE, SIM_ONLY and `async run(session)`."""
