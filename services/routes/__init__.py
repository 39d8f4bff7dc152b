"""The API's routers: health, jobs, batches."""
