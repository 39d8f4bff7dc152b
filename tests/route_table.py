"""The app's route table as tests walk it: every API route with its full path, methods and required scope."""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts


def api_routes(app: FastAPI) -> list[RouteContext]:
    """Every APIRoute of the app as served: full path (router prefixes included) and its dependencies."""
    return [route for route in iter_route_contexts(app.routes) if isinstance(route.original_route, APIRoute)]


def declared_scopes(route: RouteContext) -> list[str]:
    """The scopes a route's dependencies require (services.deps.require_scope marks its dependency with `scope`)."""
    found, stack = [], [route.dependant]
    while stack:
        dependant = stack.pop()
        if getattr(dependant.call, "scope", None):
            found.append(dependant.call.scope)
        stack.extend(dependant.dependencies)
    return found


def path_parameters(route: RouteContext) -> list[str]:
    """The names of a route's path parameters, e.g. ['job_id'] for /v1/jobs/{job_id}."""
    return list(route.param_convertors)
