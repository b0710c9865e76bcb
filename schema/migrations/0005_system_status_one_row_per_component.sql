-- Service extension (monitor). The document says "one record per ELK component"; a unique
-- component_name makes that a rule and lets the monitor upsert with ON CONFLICT.
CREATE UNIQUE INDEX uq_system_status_component_name ON system_status(component_name);
