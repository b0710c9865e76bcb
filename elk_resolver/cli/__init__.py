"""``elk-resolver``, the command line: one module per command group over
:mod:`elk_resolver.operations`, and what every command shares (one-line errors, tables,
logging set-up, progress). Not here: logic a person's decision runs (operations, handlers)."""
