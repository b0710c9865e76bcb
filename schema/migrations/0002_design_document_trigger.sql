-- The design document's success-rate trigger, verbatim. Migration 0008 replaces the
-- function body with an incremental one that yields the same results (see there).

CREATE OR REPLACE FUNCTION update_solution_success_rate()
RETURNS TRIGGER AS $$
BEGIN
    UPDATE solutions 
    SET 
        success_rate = (
            SELECT 
                CASE 
                    WHEN COUNT(*) = 0 THEN 0 
                    ELSE (COUNT(*) FILTER (WHERE execution_status = 'success') * 100.0 / COUNT(*))
                END
            FROM execution_history 
            WHERE solution_id = NEW.solution_id
        ),
        execution_count = (
            SELECT COUNT(*) 
            FROM execution_history 
            WHERE solution_id = NEW.solution_id
        ),
        last_success_at = CASE 
            WHEN NEW.execution_status = 'success' THEN NEW.executed_at 
            ELSE last_success_at 
        END,
        updated_at = CURRENT_TIMESTAMP
    WHERE id = NEW.solution_id;
    
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER trigger_update_solution_success_rate
    AFTER INSERT ON execution_history
    FOR EACH ROW
    EXECUTE FUNCTION update_solution_success_rate();
