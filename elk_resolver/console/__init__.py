"""The web console: server-rendered pages on the service's HTTP port (Jinja2 templates, a
stylesheet and one small script for live refresh shipped in this package; plain forms that work
without the script, nothing from a CDN, no build step), and the JSON API under ``/api/``
(:mod:`elk_resolver.console.api`, documented at ``/openapi.json``).

    install(web_app, settings, pool=lambda: app.pool, publish=..., asyncapi=app_document)

Every page reads through :mod:`elk_resolver.operations`, and every form posts to it; who may do
what is :mod:`elk_resolver.console.auth`.
"""

from elk_resolver.console.views import install

__all__ = ["install"]
