"""What a person does, for every face: the CLI and the web console both call these and hold no
logic of their own.

Belongs here: who decides (:mod:`.people`), approvals and incident-wide decisions
(:mod:`.approvals`), the controls (playbook switches, the kill switch, patterns:
:mod:`.controls`), error states, owners, notes, merges and splits (:mod:`.triage`), the read
views and the report (:mod:`.reading`, solutions as read on an error: :mod:`.solution_view`),
the audit trail (:mod:`.audit`), how a person writes a time (:mod:`.times`), and the
long-running operations a person starts (:mod:`.replay`, :mod:`.backfill`). Not here: argument parsing or
HTML (the faces), and decisions themselves (:mod:`handlers.execute` makes them; these only ask).
"""
