"""The HTTP API: app factory, dependencies and one router per resource."""
