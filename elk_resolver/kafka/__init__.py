"""Kafka and the embedded stack: how every client connects (TLS and SASL options from settings),
the ACLs each stage needs, creating topics, offsets that hold on Apache Kafka and Tansu, and
the embedded broker and PostgreSQL the service starts when nothing is configured.

Not here: consumers and producers of the stages (``streams/``).
"""
