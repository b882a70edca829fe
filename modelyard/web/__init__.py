"""The floor every blueprint stands on: the request context (:mod:`~modelyard.web.context`), how
errors answer (:mod:`~modelyard.web.errors`), who may call what (:mod:`~modelyard.web.auth`),
one set of body rules (:mod:`~modelyard.web.body`) and how lists page (:mod:`~modelyard.web.paging`).

Blueprints (``registry/api.py``, ``serving/``'s HTTP modules, the roof's ops routes) import
this package and nothing else of the roof; it imports the registry's domain (errors, actors)
and nothing of the roof (app, config, metrics, server)."""
