"""PostgreSQL: the pool and the named queries of ``schema/queries``, migrations, the opt-in
roles, maintenance, the in-memory caches of database rows (patterns, aliases) and the passes
that keep tables in shape (learned merges, the GIN pending list).

SQL lives in ``schema/``; this package runs it. Not here: decisions (the handlers).
"""
