"""What may be done, and to which object: the execution policy, the one object an action
binds to, playbooks, ranking of solutions, the LLM client, the executors that run a command,
and the Kubernetes RBAC the policy needs.

Not here: when to act (the handlers decide from PostgreSQL) or what an event means
(:mod:`elk_resolver.events`).
"""
