"""The Kafka side of each stage: consumers, producers, retry and dead-letter paths, and the app
that starts the stages with their HTTP endpoints. Each stage here calls its plain handler in
``handlers/``; nothing here decides what runs."""
