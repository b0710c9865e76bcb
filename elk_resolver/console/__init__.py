"""The web console: server-rendered pages on the service's HTTP port (Jinja2 templates and a
stylesheet shipped in this package; plain forms, no JavaScript, nothing from a CDN).

    install(web_app, settings, pool=lambda: app.pool, publish=..., asyncapi=app_document)

Every page reads through :mod:`elk_resolver.operations`, and every form posts to it; who may do
what is :mod:`elk_resolver.console.auth`.
"""

from elk_resolver.console.views import install

__all__ = ["install"]
