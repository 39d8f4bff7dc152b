"""The API's routers: health, jobs, batches, keys (a tenant's API keys), tenant (its settings)."""
