"""The HTTP API (FastAPI) and the `lensq` command line; torch-free."""
