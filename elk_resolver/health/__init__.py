"""Health of the ELK components and of the service itself, for ``system_status``: the checks
the monitor stage (``streams/monitor.py``) runs. Not here: the HTTP health endpoints (the app)."""
