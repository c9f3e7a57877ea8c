"""The service: scheduler, REST API, metrics and request security. The only package that
imports the service stack (FastAPI, uvicorn, APScheduler, exchange_calendars), and only in its
modules, never here, so importing one of them pays for that one alone."""
