"""Celery workers: the torch-free app, the doorbell task, the batch runner and the sweeper."""
