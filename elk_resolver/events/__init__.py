"""What an event is and its identity: parsing a Logstash record, masking the secrets in it, its
template and fingerprint, its classification against the patterns, the learned merges of
templates, and the contracts of the events the stages exchange on Kafka.

Pure: nothing here opens a connection or reads settings at import. Not here: what to do about
an event (:mod:`elk_resolver.actions`) or how it is stored (:mod:`elk_resolver.store`).
"""
