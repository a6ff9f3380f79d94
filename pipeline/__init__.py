"""Pipeline wiring: the `create_pipeline` factory, its configuration and the runners."""
