"""ELK Auto Resolver: Logstash error events from Kafka, classified, deduplicated, analysed and
resolved under a safety policy.

The package holds the library the stages stand on and, at the top, the faces people use.
Imports run one way (``tests/test_layers.py`` checks it):

    faces        elk_resolver.cli, .console, .operations, .service    what people run and click
    stages       streams/   (Kafka: topics, consumers, the app)       start the handlers
    handlers     handlers/  (one plain module per stage)              decide, given a connection
    library      elk_resolver.health, .notify, .kafka, .store,        what the handlers use
                 .actions, .events, .settings (lowest)
    SQL          schema/
"""
